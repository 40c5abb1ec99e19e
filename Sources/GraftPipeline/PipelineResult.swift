import Foundation
import GraftFormats

/// Accuracy and macro-F1 of one model on one task's split.
public struct TaskScore: Sendable, Equatable {
    public let accuracy: Double, macroF1: Double, examples: Int
    public init(accuracy: Double, macroF1: Double, examples: Int) { self.accuracy = accuracy; self.macroF1 = macroF1; self.examples = examples }

    var json: JSONValue { .object([("accuracy", .double(accuracy)), ("macro_f1", .double(macroF1)), ("examples", .int(Int64(examples)))]) }
    init?(_ j: JSONValue) {
        guard let a = j["accuracy"]?.doubleValue, let f = j["macro_f1"]?.doubleValue, let n = j["examples"]?.intValue else { return nil }
        self.init(accuracy: a, macroF1: f, examples: Int(n))
    }
}

/// One task's own results: its LoRA adapter (with its head) and the linear probe on the base.
public struct TaskResult: Sendable {
    public let name: String
    public let labels: [String]
    public let trainExamples: Int, validationExamples: Int, testExamples: Int
    public let individual: (validation: TaskScore, test: TaskScore)
    public let probe: (validation: TaskScore, test: TaskScore)
    /// The adapter's metrics.jsonl records (loss curve).
    public let history: [JSONValue]
    public let adapterPath: String, probePath: String
    /// The folder holding the task's train/validation/test.jsonl.
    public let dataFolder: String
}

/// One merge method: validation accuracy over its scale grid, the scale kept, and the kept model's
/// test scores with each task's head.
public struct MethodResult: Sendable {
    public let candidate: MergeCandidate
    /// Validation accuracy per task, per scale tried (grid order).
    public let grid: [(scale: Double, validation: [String: TaskScore])]
    public let chosenScale: Double
    public let test: [String: TaskScore]
    public let modelPath: String, configPath: String

    public func meanValidation(_ scale: Double, tasks: [String]) -> Double {
        guard let g = grid.first(where: { $0.scale == scale }) else { return .nan }
        return tasks.map { g.validation[$0]?.accuracy ?? .nan }.reduce(0, +) / Double(tasks.count)
    }
}

/// What a multi-task run produced.
public struct PipelineResult: Sendable {
    public let model: String
    public let workDir: String
    public let seed: UInt64
    public let maxLength: Int
    public let tasks: [TaskResult]
    public let methods: [MethodResult]
    /// Wall time per stage, seconds (cached stages take almost none).
    public let stageSeconds: [(stage: String, seconds: Double)]

    var taskNames: [String] { tasks.map(\.name) }

    /// Mean test accuracy over the tasks.
    public func meanTest(_ m: MethodResult) -> Double { mean(tasks.map { m.test[$0.name]?.accuracy ?? .nan }) }
    /// Mean over the tasks of merged accuracy / the task's own adapter's accuracy (test).
    public func meanNormalized(_ m: MethodResult) -> Double {
        mean(tasks.map { (m.test[$0.name]?.accuracy ?? .nan) / $0.individual.test.accuracy })
    }
    public var meanIndividual: Double { mean(tasks.map(\.individual.test.accuracy)) }
    public var meanProbe: Double { mean(tasks.map(\.probe.test.accuracy)) }

    /// The merge with the best mean validation accuracy at its kept scale: chosen without looking at test.
    public var winner: MethodResult? {
        methods.max { a, b in a.meanValidation(a.chosenScale, tasks: taskNames) < b.meanValidation(b.chosenScale, tasks: taskNames) }
    }

    func mean(_ xs: [Double]) -> Double { xs.isEmpty ? .nan : xs.reduce(0, +) / Double(xs.count) }
}
