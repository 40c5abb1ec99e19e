import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor

/// What `graft gate` trains: PHATGOOSE's gates of one trained LoRA adapter, on that adapter's own data.
public struct GateSpec: Sendable {
    public var model: String
    /// The adapter folder; its gates are written into it (`phatgoose_gates.safetensors`).
    public var adapter: String
    /// Causal-LM rows (`messages`, `prompt` + `completion`, or `text`), as `graft train --task causal-lm` reads.
    public var data: String
    public var maxLength: Int? = nil
    /// The reference code's settings: AdamW at 5e-3, no weight decay, a constant schedule after 6 % warmup,
    /// gradients clipped at 1, 100 steps (its batch of 1024 sequences is a GPU's; the batch here is smaller).
    public var trainer: TrainerOptions = {
        var o = TrainerOptions()
        o.maxSteps = 100; o.learningRate = 5e-3; o.weightDecay = 0; o.schedule = .constant; o.warmupRatio = 0.06
        o.maxGradNorm = 1; o.batchSize = 8
        return o
    }()
    public var bf16 = false

    public init(model: String, adapter: String, data: String) { self.model = model; self.adapter = adapter; self.data = data }
}

public enum PhatgooseTraining {
    /// Trains the gates with the base model and the adapter frozen and writes them beside the adapter.
    /// Returns the last logged loss record.
    @discardableResult
    public static func run(_ spec: GateSpec, log: (String) -> Void, onEvent: (TrainerEvent) -> Void) throws -> [JSONValue] {
        Linalg.useSingleThreadedBLAS()
        let adapter = try AdapterMethods.open(spec.adapter)
        var lm = try CausalLM(path: spec.model)
        var train = TrainSpec(model: spec.model, task: .causalLM, data: spec.data, adapter: try adapter.recipe(dropout: 0), output: spec.adapter)
        train.validationSplit = 0
        train.maxLength = spec.maxLength
        train.trainer = spec.trainer
        let (examples, _, _) = try TrainingRun.examples(train, maxLength: lm.model.config.contextLength, stratify: nil, log: log) { rs, o, r in
            try Datasets.causalLM(rs, tokenizer: lm.tokenizer, chatTemplate: lm.chatTemplate, eos: lm.eosId, options: o, report: &r)
        }
        if spec.bf16 { lm.model.enableBF16() }
        let updates = try lm.model.fitted(adapter.layerUpdates(dropout: 0), source: adapter.path)
        guard ArrowRouting.isPlainLoRA(updates) else {
            throw TrainingError("\(adapter.path): PHATGOOSE gates plain LoRA adapters; this one is \(adapter.method)")
        }
        let gates = updates.sorted { $0.key < $1.key }.map { ($0.key, PhatgooseGate(lora: $0.value as! LoRAUpdate)) }
        try lm.model.attach(gates.map { ($0.0, $0.1 as any LayerUpdate) }, source: adapter.path)
        let trainable = TrainableAdapter.gates(gates, recipe: train.adapter, layout: lm.model.virtualTokenLayout)
        let trainer = try Trainer(task: CausalLMTask(model: lm.model), adapter: trainable, options: spec.trainer, train: examples, validation: [])
        log("training the gates of \(gates.count) modules (\(trainable.trainableCount) parameters), \(trainer.totalSteps) steps")
        try trainer.run(checkpoints: nil, resumeFrom: nil, fingerprint: .null, baseModel: spec.model, taskType: TaskKind.causalLM.peftTaskType, onEvent: onEvent)
        let settings = spec.trainer
        try PhatgooseGates.write(gates.map { ($0.0, $0.1.gate) }, adapter: spec.adapter, metadata: [
            "graft": "phatgoose gates", "steps": String(trainer.step), "learning_rate": String(settings.learningRate),
            "batch_size": String(settings.batchSize), "data": (spec.data as NSString).lastPathComponent])
        return trainer.history
    }
}
