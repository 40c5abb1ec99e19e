extension TaskArithmeticMerge {
    /// TIES-Merging: trim each task vector to its top-`density` entries by magnitude, elect a sign per
    /// entry from the weighted sum, and average the entries that agree (normalize on by default).
    /// Source: Yadav et al. 2023, "TIES-Merging" (arXiv 2306.01708); semantics of mergekit `ties`.
    public static let ties = TaskArithmeticMerge(
        name: "ties", summary: "trim to top-density, elect sign, disjoint mean (Yadav et al. 2023)",
        sparsification: .magnitude, consensus: .sum, defaultNormalize: true, defaultRescale: false)
}
