import ArgumentParser
import GraftMerging
import GraftTensor

struct FuseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuse",
        abstract: "Fold an HF PEFT adapter (LoRA, DoRA, IA³) into its base model (PEFT's merge_and_unload).",
        discussion: """
        Every module the adapter targets gets its update folded in, as PEFT merges it: LoRA
        W + (alpha / r) · B·A (alpha / sqrt(r) with rsLoRA); DoRA m ⊙ (W + ΔW) / ‖W + ΔW‖; IA³ W's
        rows and bias scaled (columns on feed-forward modules). Tensors in the adapter's modules_to_save (e.g. a classifier head) are added. The output is a
        plain model folder that transformers, llama.cpp's converter and Graft load without PEFT.

        Example:
          graft fuse --model ~/models/minilm --adapter runs/sentiment-lora fused-sentiment/
        """)

    @Option(help: "Base model folder or .safetensors file.")
    var model: String

    @Option(help: "HF PEFT adapter folder (adapter_config.json + adapter_model.safetensors) of a method graft train --list-methods shows.")
    var adapter: String

    @Argument(help: "Output model folder.")
    var output: String

    @Option(help: "Output dtype for float tensors: float32, float16 or bfloat16 (default: as stored).")
    var dtype: String?

    @Flag(help: "Replace the output folder if it exists.")
    var force = false

    func validate() throws {
        if let d = dtype, DType(userName: d) == nil || DType(userName: d) == .f64 {
            throw ValidationError("--dtype: unknown '\(d)' (use float32, float16 or bfloat16)")
        }
    }

    func run() throws {
        var options = MergeOptions()
        options.overwrite = force
        let bar = ProgressBar("fuse")
        let s = try Fuse.run(model: model, adapter: adapter, to: output, dtype: dtype.flatMap { DType(userName: $0) },
                             options: options) { bar.update($0) }
        printErr("fused \(s.fusedModules) module(s), added \(s.savedTensors) saved tensor(s) → \(s.outputPath)")
    }
}
