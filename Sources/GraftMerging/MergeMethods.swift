/// The registry of merge methods: the one place a new method is listed.
public enum MergeMethods {
    public static let all: [any MergeMethod] = [
        LinearMerge(),
        TaskArithmeticMerge.taskArithmetic,
        TaskArithmeticMerge.ties,
        TaskArithmeticMerge.dareLinear,
        TaskArithmeticMerge.dareTies,
        TaskArithmeticMerge.breadcrumbs,
        TaskArithmeticMerge.breadcrumbsTies,
        SlerpMerge(),
        ModelStockMerge(),
        PCBMerge(),
        TSVMerge(),
    ]

    public static var names: [String] { all.map(\.name) }

    public static func named(_ name: String) throws -> any MergeMethod {
        guard let m = all.first(where: { $0.name == name }) else {
            throw MergeError.config("unknown merge_method '\(name)'; available: \(names.joined(separator: ", "))")
        }
        return m
    }
}
