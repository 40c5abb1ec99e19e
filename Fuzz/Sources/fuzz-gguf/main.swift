import FuzzDriver
import GraftFormats
import GraftTensor
import GraftText

// GGUF: header, metadata, tensor infos, each tensor's blocks dequantized, and the vocabulary as a tokenizer.
fuzz { bytes in
    let path = file(named: "model.gguf", bytes)
    guard let g = try? GGUFFile(path: path) else { return }
    for t in g.tensors { _ = try? g.floats(t.name) }
    if let tok = try? TokenizerLoader.load(model: path) { _ = tok.encode("Hello, world! ¿Qué tal? 你好", addSpecialTokens: true) }
}
