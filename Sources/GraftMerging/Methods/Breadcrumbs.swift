extension TaskArithmeticMerge {
    /// Model Breadcrumbs: per tensor, drop the largest `gamma` fraction (outliers) and the smallest
    /// entries of each task vector so that `density` remains, then task arithmetic.
    /// Source: Davari & Belilovsky 2023, "Model Breadcrumbs" (arXiv 2312.06795); mergekit `breadcrumbs`.
    public static let breadcrumbs = TaskArithmeticMerge(
        name: "breadcrumbs", summary: "drop outliers and small entries, then task arithmetic (Davari & Belilovsky 2023)",
        sparsification: .magnitudeOutliers, consensus: .none, defaultNormalize: false, defaultRescale: false)

    /// Breadcrumbs sparsification with TIES sign election. mergekit `breadcrumbs_ties`.
    public static let breadcrumbsTies = TaskArithmeticMerge(
        name: "breadcrumbs_ties", summary: "Breadcrumbs sparsification + TIES sign election",
        sparsification: .magnitudeOutliers, consensus: .sum, defaultNormalize: false, defaultRescale: false)
}
