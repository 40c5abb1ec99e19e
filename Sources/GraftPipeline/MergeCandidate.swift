import Foundation

/// One merge method with the settings it is run at and the grid of scales tried for it. Each grid
/// point is a plain mergekit-style config (`graft merge` runs the same file by hand).
public struct MergeCandidate: Sendable {
    /// `merge_method:` in the config (`opcm` runs as `graft merge --continual`).
    public let method: String
    /// Name in reports.
    public let label: String
    /// The global parameter that scales the merged task vector (`lambda`, or TSV-M's `alpha`).
    public let scaleParameter: String
    /// Scales tried; the one with the best mean validation accuracy is kept.
    public let grid: [Double]
    /// Other global parameters, as YAML values.
    public let globals: [(name: String, value: String)]
    /// Per-model parameters, as YAML values (the same for every model).
    public let perModel: [(name: String, value: String)]

    public init(method: String, label: String, scaleParameter: String = "lambda", grid: [Double],
                globals: [(name: String, value: String)] = [], perModel: [(name: String, value: String)] = []) {
        self.method = method; self.label = label; self.scaleParameter = scaleParameter; self.grid = grid
        self.globals = globals; self.perModel = perModel
    }

    /// Whether it merges one model at a time (`graft merge --continual`).
    public var isContinual: Bool { method == "opcm" }

    /// The six merges of the demo, three scales each around where they work for four LoRA task vectors
    /// trained from probe-initialised heads: methods that add the task vectors (task arithmetic,
    /// Breadcrumbs) below 1; methods that average or rescale them (TIES's disjoint mean, PCB's weighted
    /// mean, TSV-M's orthogonalised sum, OPCM's norm-matched update) around 1.
    public static let standard: [MergeCandidate] = [
        MergeCandidate(method: "task_arithmetic", label: "Task Arithmetic", grid: [0.3, 0.5, 0.7],
                       globals: [("normalize", "false")], perModel: [("weight", "1.0")]),
        MergeCandidate(method: "ties", label: "TIES", grid: [0.7, 1.0, 1.5],
                       globals: [("normalize", "true")], perModel: [("weight", "1.0"), ("density", "0.2")]),
        MergeCandidate(method: "breadcrumbs", label: "Breadcrumbs", grid: [0.5, 0.7, 1.0],
                       globals: [("normalize", "false")], perModel: [("weight", "1.0"), ("density", "0.9"), ("gamma", "0.01")]),
        MergeCandidate(method: "pcb", label: "PCB", grid: [0.7, 1.0, 1.5], globals: [("pcb_ratio", "0.1")]),
        MergeCandidate(method: "tsv", label: "TSV-M", scaleParameter: "alpha", grid: [0.7, 1.0, 1.5]),
        MergeCandidate(method: "opcm", label: "OPCM (continual)", grid: [0.7, 1.0, 1.5], globals: [("alpha", "0.5")]),
    ]

    /// The merge config at one scale: `base` with each adapter applied (`base+adapter`), in order.
    public func config(base: String, adapters: [String], scale: Double) -> String {
        func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }
        var y = "# \(label) at \(scaleParameter) = \(Self.format(scale)): written by graft demo; run it with\n"
        y += "#   graft merge \(isContinual ? "--continual " : "")THIS_FILE OUTPUT\n"
        y += "merge_method: \(method)\nbase_model: \(q(base))\ndtype: float32\nparameters:\n"
        for (n, v) in globals { y += "  \(n): \(v)\n" }
        y += "  \(scaleParameter): \(Self.format(scale))\nmodels:\n"
        for a in adapters {
            y += "  - model: \(q(base + "+" + a))\n"
            if !perModel.isEmpty {
                y += "    parameters: {" + perModel.map { "\($0.name): \($0.value)" }.joined(separator: ", ") + "}\n"
            }
        }
        return y
    }

    /// "0.5", "1", "1.5": the shortest form, used in file names and reports.
    public static func format(_ v: Double) -> String {
        v == v.rounded() ? String(Int(v)) : String(format: "%g", v)
    }
}
