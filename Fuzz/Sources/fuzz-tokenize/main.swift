import Foundation
import FuzzDriver
import GraftFormats
import GraftText

// Arbitrary bytes as text through the fetched models' tokenizers, encoded and decoded back: MiniLM's
// WordPiece (tokenizer.json) and SmolLM2's byte-level BPE (from its GGUF vocabulary).
let home = GraftHome.path + "/models"
let tokenizers: [any Tokenizer] = [home + "/minilm", home + "/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"].compactMap {
    try? TokenizerLoader.load(model: $0)
}
if tokenizers.isEmpty { fatalError("fuzz-tokenize needs the fetched models (scripts/fetch-models) under \(home)") }
fuzz { bytes in
    let text = String(decoding: bytes, as: UTF8.self)
    for t in tokenizers {
        for ids in [t.encode(text, addSpecialTokens: true), t.encode(text, addSpecialTokens: false)] { _ = t.decode(ids, skipSpecialTokens: false) }
    }
}
