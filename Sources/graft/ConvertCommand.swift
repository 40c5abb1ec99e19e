import ArgumentParser
import Foundation
import GraftFormats
import GraftModels
import GraftTensor
import GraftMerging

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a Llama model between GGUF (llama.cpp, Ollama) and an HF folder (transformers, Graft).",
        discussion: """
        GGUF → HF folder: tensors dequantised to --dtype (default float32), q/k rows restored to transformers' layout, config.json, tokenizer.json and tokenizer_config.json (with the chat template) written from the GGUF metadata.

        HF folder → GGUF: tensors in --dtype (float32, float16 or bfloat16; 1-D norms stay float32), q/k rows permuted for llama.cpp, the llama.* metadata and the tokenizer.ggml.* vocabulary from tokenizer.json. So a model merged or fused by Graft runs in llama.cpp.

        Examples:
          graft convert smollm2 smollm2-hf/
          graft convert merged-model/ merged.gguf --dtype float16
        """)

    @Argument(help: "A .gguf file (or a fetched model's short name) or an HF model folder.")
    var input: String

    @Argument(help: "The output: a folder when the input is GGUF, a .gguf file when it is a folder.")
    var output: String

    @Option(help: "Output tensor type: float32, float16 or bfloat16.")
    var dtype: String = "float32"

    @Flag(help: "Replace the output if it exists.")
    var force = false

    func validate() throws {
        guard let d = DType(userName: dtype), d != .f64 else { throw ValidationError("--dtype: unknown '\(dtype)' (float32, float16, bfloat16)") }
    }

    func run() throws {
        let src = try ModelLocator.resolve(input)
        let dt = DType(userName: dtype)!
        let bar = ProgressBar("convert")
        func report(_ k: Int, _ n: Int) {
            bar.update(StreamProgress(tensorsDone: k, tensorsTotal: n, bytesDone: 0, bytesTotal: 0, current: ""))
        }
        if src.hasSuffix(".gguf") {
            let g = try GGUFFile(path: src)
            let out = try OutputDirectory(output, overwrite: force, inputs: [src])
            do {
                try LlamaGGUFConversion.ggufToHF(g, into: out.tempPath, dtype: dt, maxShardBytes: 5_000_000_000, progress: report)
                try out.commit()
            } catch { out.abandon(); throw error }
            printErr("wrote HF folder \(out.finalPath)")
        } else {
            guard output.hasSuffix(".gguf") else { throw ValidationError("converting a folder writes a .gguf file: name the output *.gguf") }
            if FileManager.default.fileExists(atPath: output) && !force { throw ValidationError("\(output) exists (use --force to replace it)") }
            try DurableFile.write(to: output, inputs: [src]) { tmp in
                try LlamaGGUFConversion.hfToGGUF(folder: src, to: tmp, type: dt == .f32 ? .f32 : dt == .f16 ? .f16 : .bf16, progress: report)
            }
            printErr("wrote \(output)")
        }
    }
}
