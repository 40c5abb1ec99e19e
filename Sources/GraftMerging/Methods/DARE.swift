extension TaskArithmeticMerge {
    /// DARE with linear combination: drop each task-vector entry with probability 1 − density, rescale
    /// survivors (L1-norm preserving, as mergekit does), sum. Seeded by `--seed`.
    /// Source: Yu et al. 2023, "Language Models are Super Mario" (arXiv 2311.03099); mergekit `dare_linear`.
    public static let dareLinear = TaskArithmeticMerge(
        name: "dare_linear", summary: "random drop + rescale, then task arithmetic (Yu et al. 2023)",
        sparsification: .random, consensus: .none, defaultNormalize: false, defaultRescale: true)

    /// DARE followed by TIES sign election. mergekit `dare_ties`.
    public static let dareTies = TaskArithmeticMerge(
        name: "dare_ties", summary: "random drop + rescale, then TIES sign election (Yu et al. 2023)",
        sparsification: .random, consensus: .sum, defaultNormalize: false, defaultRescale: true)
}
