import Foundation
import FuzzDriver
import GraftFormats
import GraftTensor
import GraftText

// GGUF: header, metadata, tensor infos, each tensor's blocks dequantized, and the vocabulary as a tokenizer.
// `fuzz-gguf --write-seeds DIR` writes its seed files with Graft's GGUFWriter instead (make fuzz does, so no
// model-format binary is committed): a byte-level BPE vocabulary and a SentencePiece one, F32/F16/BF16 tensors.
let args = CommandLine.arguments
if args.count == 3, args[1] == "--write-seeds" {
    try FileManager.default.createDirectory(atPath: args[2], withIntermediateDirectories: true)
    let m = FloatBuffer((0..<128).map { Float($0 % 17) / 8 - 1 })
    func seed(_ name: String, model: String, tokens: [String], merges: [String]) throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("general.alignment", .uint(32))
        w.set("tokenizer.ggml.model", .string(model))
        w.set("tokenizer.ggml.tokens", .array(tokens.map { .string($0) }))
        w.set("tokenizer.ggml.token_type", .array(tokens.map { _ in .int(1) }))
        if model == "llama" { w.set("tokenizer.ggml.scores", .array(tokens.indices.map { .float(-Double($0)) })) }
        if !merges.isEmpty { w.set("tokenizer.ggml.merges", .array(merges.map { .string($0) })) }
        w.set("tokenizer.ggml.bos_token_id", .uint(0)); w.set("tokenizer.ggml.eos_token_id", .uint(1))
        for (t, type) in [("f32", GGMLType.f32), ("f16", .f16), ("bf16", .bf16)] { try w.add(t, shape: [2, 64], values: m, type: type) }
        try w.write(to: args[2] + "/" + name)
    }
    try seed("bpe.gguf", model: "gpt2", tokens: ["<s>", "</s>", "H", "e", "l", "o", "Ġ", "w", "r", "d", "He", "ll", "llo", "Hello"],
             merges: ["H e", "l l", "ll o", "He llo"])
    try seed("spm.gguf", model: "llama", tokens: ["<unk>", "<s>", "</s>", "▁", "▁H", "ello", "▁Hello", "H", "e", "l", "o"]
             + (0..<256).map { String(format: "<0x%02X>", $0) }, merges: [])
    exit(0)
}

fuzz { bytes in
    let path = file(named: "model.gguf", bytes)
    guard let g = try? GGUFFile(path: path) else { return }
    for t in g.tensors { _ = try? g.floats(t.name) }
    if let tok = try? TokenizerLoader.load(model: path) { _ = tok.encode("Hello, world! ¿Qué tal? 你好", addSpecialTokens: true) }
}
