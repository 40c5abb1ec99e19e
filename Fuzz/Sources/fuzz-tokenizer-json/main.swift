import FuzzDriver
import GraftText

// tokenizer.json: loading any bytes, then tokenizing a fixed text with what loaded.
fuzz { bytes in
    guard let tok = try? TokenizerLoader.load(path: file(named: "tokenizer.json", bytes)) else { return }
    _ = tok.encode("Hello, world! ¿Qué tal? 你好 <s> [CLS]", addSpecialTokens: true)
}
