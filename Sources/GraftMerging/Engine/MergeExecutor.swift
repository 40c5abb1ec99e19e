import Foundation
import GraftFormats
import GraftTensor

/// Progress of a long-running streaming job, reported after each tensor.
public struct StreamProgress: Sendable {
    public let tensorsDone: Int
    public let tensorsTotal: Int
    public let bytesDone: Int
    public let bytesTotal: Int
    public let current: String

    public init(tensorsDone: Int, tensorsTotal: Int, bytesDone: Int, bytesTotal: Int, current: String) {
        self.tensorsDone = tensorsDone; self.tensorsTotal = tensorsTotal; self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal; self.current = current
    }
}

/// Options of a merge run.
public struct MergeOptions: Sendable {
    public var overwrite = false
    public var allowNonFinite = false
    public var maxShardBytes = 5_000_000_000
    public var seed: UInt64 = 0
    public var copyTokenizer = true
    public init() {}
}

/// What a finished merge did.
public struct MergeSummary: Sendable {
    public let tensors: Int
    public let bytesRead: Int
    public let bytesWritten: Int
    public let seconds: Double
    public let outputPath: String
}

/// Streams a merge: one tensor name at a time across all inputs, through the memory maps, so peak
/// memory is about (inputs + 1) × the largest tensor whatever the model size. Each method computes on
/// all cores; output shards are laid out up front and each tensor is written as soon as it is merged.
public enum MergeExecutor {
    public static func run(_ plan: MergePlan, to outPath: String, options: MergeOptions = MergeOptions(),
                           progress: ((StreamProgress) -> Void)? = nil) throws -> MergeSummary {
        let start = Date()
        let out = try OutputDirectory(outPath, overwrite: options.overwrite, inputs: plan.inputPaths)
        do {
            let writer = try ShardedSafetensorsWriter(
                directory: out.tempPath,
                specs: plan.items.map { TensorSpec(name: $0.name, dtype: $0.outputDType, shape: $0.shape) },
                maxShardBytes: options.maxShardBytes)
            let sources = [plan.base].compactMap { $0 } + plan.inputs
            let totalBytes = plan.outputBytes
            var doneBytes = 0
            for (k, item) in plan.items.enumerated() {
                try writer.write(item.name, tensor: try mergeOne(item, plan: plan, options: options))
                for s in sources { s.release(item.name) }
                doneBytes += item.byteCount
                progress?(StreamProgress(tensorsDone: k + 1, tensorsTotal: plan.items.count, bytesDone: doneBytes,
                                         bytesTotal: totalBytes, current: item.name))
            }
            try writer.finish()
            let outDType = plan.config.outDtype ?? plan.config.dtype
            try MergeOutput.writeConfig(from: plan.reference.checkpoint, dtype: outDType, to: out)
            if options.copyTokenizer {
                try MergeOutput.copyTokenizer(from: try tokenizerFolder(plan), to: out)
            }
            try MergeOutput.writeModelCard(MergeOutput.mergeCard(plan: plan), to: out)
            try FileBytes.write(Data(plan.config.text.utf8), to: out.path("graft_merge_config.yml"))
            try out.commit()
        } catch {
            out.abandon()
            throw error
        }
        return MergeSummary(tensors: plan.items.count, bytesRead: plan.inputBytes, bytesWritten: plan.outputBytes,
                            seconds: Date().timeIntervalSince(start), outputPath: out.finalPath)
    }

    static func tokenizerFolder(_ plan: MergePlan) throws -> String? {
        guard let src = plan.config.tokenizerSource, src != "base" else { return plan.reference.checkpoint.directory }
        if src == "union" { throw MergeError.config("tokenizer_source: union is not supported; use base or a model path") }
        let all = [plan.base].compactMap { $0 } + plan.inputs
        if let m = all.first(where: { $0.reference.name == src }) { return m.checkpoint.directory }
        let ref = try MergeConfig.resolveModel(src, field: "tokenizer_source", configDirectory: "")
        return ref.path
    }

    /// Merges the tensors named `item.name` (or copies a non-float tensor through).
    static func mergeOne(_ item: MergePlan.Item, plan: MergePlan, options: MergeOptions) throws -> Tensor {
        let ref = plan.reference
        guard let globals = item.globals else { return try ref.tensor(item.name) }
        func load(_ s: ModelSource) throws -> FloatBuffer {
            let b = try s.floats(item.name)
            if !options.allowNonFinite, let bad = b.firstNonFinite() {
                throw MergeError.input("\(s.reference.name): tensor '\(item.name)' has a non-finite value (\(b[bad])) at element \(bad); pass --allow-nonfinite to merge anyway")
            }
            return b
        }
        // Every input holds the base's own tensor (a LoRA input that does not target it): every task
        // vector is zero, and a method that merges task vectors returns the base. Skips the method's
        // work — for TSV-M, an SVD of each zero matrix — on all the tensors a LoRA merge leaves alone.
        if let b = plan.base, plan.method.basePolicy == .required, plan.inputs.allSatisfy({ $0.sharesTensor(item.name, with: b) }) {
            return try load(b).tensor(shape: item.shape, dtype: item.outputDType)
        }
        let base = try plan.base.map(load)
        let inputs = try plan.inputs.enumerated().map { i, s in
            MergeInput(model: s.reference.name, values: try load(s), parameters: item.perModel[i])
        }
        let group = TensorGroup(name: item.name, shape: item.shape, base: base, inputs: inputs, parameters: globals,
                                seed: options.seed)
        let merged = try plan.method.merge(group)
        return merged.tensor(shape: item.shape, dtype: item.outputDType)
    }
}
