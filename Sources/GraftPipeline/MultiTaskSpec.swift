import Foundation
import GraftAdapters
import GraftData
import GraftFormats
import GraftTraining

/// One task of a multi-task run: a folder with `train.jsonl`, `validation.jsonl` and `test.jsonl`
/// (`{"text", "label"}` rows, as `graft data prepare` writes them).
public struct PipelineTask: Sendable {
    public let name: String
    public let folder: String
    public init(name: String, folder: String) { self.name = name; self.folder = folder }
    public func split(_ s: String) -> String { (folder as NSString).appendingPathComponent(s + ".jsonl") }
}

/// Everything a multi-task run needs: the base model, the tasks, how adapters and probes train, which
/// merges run, and the work folder that caches every finished step.
public struct MultiTaskSpec: Sendable {
    public var model: String
    public var tasks: [PipelineTask]
    public var workDir: String
    public var lora: LoRAConfig
    /// LoRA training (epochs from `epochs[task]` when set).
    public var trainer: TrainerOptions
    public var epochs: [String: Int] = [:]
    /// Linear-probe training (the head alone on frozen features).
    public var probe: TrainerOptions
    public var maxLength = 128
    /// bf16 products with the frozen weights, in training and evaluation.
    public var bf16: Bool
    public var methods: [MergeCandidate] = MergeCandidate.standard
    public var evalBatchSize = 32
    /// Adapter checkpoints every this many steps (an interrupted run resumes from the newest).
    public var checkpointEvery = 50

    public init(model: String, tasks: [PipelineTask], workDir: String, bf16: Bool, seed: UInt64 = 42) {
        self.model = model; self.tasks = tasks; self.workDir = workDir; self.bf16 = bf16
        lora = LoRAConfig(rank: 8, alpha: 16, targetModules: ["query", "value"])
        lora.dropout = 0.1
        trainer = TrainerOptions()
        trainer.epochs = 2; trainer.batchSize = 32; trainer.learningRate = 1e-3; trainer.warmupRatio = 0.1
        trainer.seed = seed; trainer.logEvery = 10
        probe = TrainerOptions()
        probe.epochs = 20; probe.batchSize = 32; probe.learningRate = 1e-2; probe.warmupRatio = 0.1
        probe.seed = seed; probe.logEvery = 50
    }

    public var seed: UInt64 { trainer.seed }

    public func adapterPath(_ t: PipelineTask) -> String { path("adapters", t.name) }
    public func probePath(_ t: PipelineTask) -> String { path("probes", t.name) }
    public func mergedPath(_ m: MergeCandidate) -> String { path("merged", m.method) }
    func path(_ parts: String...) -> String { parts.reduce(workDir) { ($0 as NSString).appendingPathComponent($1) } }

    /// The settings that decide the results, stored in the work folder and compared on a rerun.
    public var fingerprint: JSONValue {
        func size(_ p: String) -> JSONValue {
            ((try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? nil).map { .int(Int64($0)) } ?? .null
        }
        return .object([
            ("model", .string((model as NSString).standardizingPath)),
            ("tasks", .array(tasks.map { t in
                .object([("name", .string(t.name)), ("folder", .string((t.folder as NSString).standardizingPath)),
                         ("train_bytes", size(t.split("train"))), ("validation_bytes", size(t.split("validation"))),
                         ("test_bytes", size(t.split("test")))])
            })),
            ("lora", LoRAWriter.configJSON(lora, taskType: "SEQ_CLS", baseModel: "", modulesToSave: [])),
            ("trainer", trainer.json), ("epochs", .object(epochs.sorted { $0.key < $1.key }.map { ($0.key, .int(Int64($0.value))) })),
            ("probe", probe.json), ("max_length", .int(Int64(maxLength))), ("precision", .string(bf16 ? "bf16" : "f32")),
            ("eval_batch_size", .int(Int64(evalBatchSize))),
            ("methods", .array(methods.map { m in
                .object([("method", .string(m.method)), ("scale", .string(m.scaleParameter)), ("grid", .array(m.grid.map { .double($0) })),
                         ("globals", .object(m.globals.map { ($0.name, .string($0.value)) })),
                         ("per_model", .object(m.perModel.map { ($0.name, .string($0.value)) }))])
            })),
        ])
    }
}

/// A multi-task run that cannot go on; names the file or setting.
public struct PipelineError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
