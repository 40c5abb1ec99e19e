import ArgumentParser
import Foundation
import GraftAdapters
import GraftModels
import GraftTraining

struct GateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gate",
        abstract: "Train PHATGOOSE gates for a trained LoRA adapter, so that routing can choose it per token.",
        discussion: """
        PHATGOOSE (Muqeeth et al. 2024): after an adapter is trained, each of its LoRA modules gets a gate
        vector v that scales the module's update by sigmoid(x·v), trained on the adapter's own data with the
        base model and the adapter frozen. The gates are written into the adapter's folder
        (phatgoose_gates.safetensors; the adapter's own files are untouched, so PEFT still loads it).
        At inference, `graft generate --route phatgoose --adapters DIR` and `graft serve --route phatgoose`
        send each token at each module to the 2 adapters whose standardised gate best matches the token's
        standardised input, weighted by a softmax of those scores.

        Defaults are the reference code's: 100 steps of AdamW at 5e-3, 6 % warmup, a constant rate, no weight
        decay, gradients clipped at 1.

        Example:
          graft train --task causal-lm --model smollm2 --data sentiment.jsonl --output adapters/sentiment
          graft gate --model smollm2 --adapter adapters/sentiment --data sentiment.jsonl
        """)

    @Option(help: "The base model the adapter was trained on: a .gguf file, an HF folder, or a fetched model's short name.")
    var model: String

    @Option(help: "The trained LoRA adapter folder; its gates are written into it.")
    var adapter: String

    @Option(help: "The adapter's training data: JSONL or CSV rows of {\"messages\": …}, {\"prompt\", \"completion\"} or {\"text\"}.")
    var data: String

    private static let defaults = GateSpec(model: "", adapter: "", data: "")

    @Option(help: "Optimizer steps.")
    var steps = Self.defaults.trainer.maxSteps!

    @Option(help: "Sequences per step.")
    var batchSize = Self.defaults.trainer.batchSize

    @Option(help: "AdamW learning rate.")
    var learningRate = Self.defaults.trainer.learningRate

    @Option(help: "Longest sequence in tokens (longer rows are truncated; default: the model's context).")
    var maxLength: Int?

    @Option(help: "Seed of the data order.")
    var seed = Self.defaults.trainer.seed

    @Flag(help: "Products with the frozen weights in bf16 (float32 accumulation).")
    var bf16 = false

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if !(learningRate > 0) { throw ValidationError("--learning-rate must be above 0") }
        if let m = maxLength, m < 2 { throw ValidationError("--max-length must be at least 2") }
    }

    func run() throws {
        var spec = GateSpec(model: try ModelLocator.resolve(model), adapter: adapter, data: data)
        spec.trainer.maxSteps = steps
        spec.trainer.batchSize = batchSize
        spec.trainer.learningRate = learningRate
        spec.trainer.seed = seed
        spec.maxLength = maxLength
        spec.bf16 = bf16
        let bar = TrainProgress()
        try PhatgooseTraining.run(spec, log: { printErr($0) }, onEvent: bar.handle)
        printErr("gates written to \((adapter as NSString).appendingPathComponent(PhatgooseGates.fileName))")
    }
}
