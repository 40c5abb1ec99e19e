import ArgumentParser
import GraftMerging
import GraftModels
import GraftTensor

struct FuseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuse",
        abstract: "Fold an HF PEFT adapter (LoRA, DoRA, AdaLoRA, IA³, VeRA, NOLA) into its base model (PEFT's merge_and_unload).",
        discussion: """
        Every module the adapter targets gets its update folded in, as PEFT merges it: LoRA
        W + (alpha / r) · B·A (alpha / sqrt(r) with rsLoRA); DoRA m ⊙ (W + ΔW) / ‖W + ΔW‖; AdaLoRA (and
        IncreLoRA, TriAdaptLoRA, saved in its form) W + alpha / (init_r + 1e-5) · B·(A ⊙ E); IA³ W's
        rows and bias scaled (columns on feed-forward modules); VeRA and NOLA their recomposed B·A.
        Prompts, prefixes and bottleneck adapters are not weight changes and are refused. Tensors in the adapter's modules_to_save (e.g. a classifier head) are added. The output is a
        plain model folder that transformers, llama.cpp's converter and Graft load without PEFT.

        Example:
          graft fuse --model ~/models/minilm --adapter runs/sentiment-lora fused-sentiment/
        """)

    @Option(help: "Base model: folder, .safetensors file, or a fetched short name (minilm).")
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
        let s = try Fuse.run(model: try ModelLocator.resolve(model), adapter: adapter, to: output, dtype: dtype.flatMap { DType(userName: $0) },
                             options: options) { bar.update($0) }
        printErr("fused \(s.fusedModules) module(s), added \(s.savedTensors) saved tensor(s) → \(s.outputPath)")
    }
}
