import Foundation
import GraftFormats
import GraftText
import XCTest

/// A "llama" (SentencePiece BPE) GGUF vocabulary against llama.cpp's own tokenizer
/// (Tests/Fixtures/gguf, made by scripts/reference/make-spm-references.py).
final class SentencePieceTests: XCTestCase {
    func testTokenizationAndDecodingEqualLlamaCpp() throws {
        let dir = projectRoot + "/Tests/Fixtures/gguf"
        let tok = try TokenizerLoader.load(model: dir + "/spm-vocab.gguf")
        XCTAssertTrue(tok is SentencePieceBPETokenizer)
        let ref = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/spm-expected.json"))))
        let cases = ref["cases"]?.arrayValue ?? []
        XCTAssertGreaterThanOrEqual(cases.count, 5)
        for c in cases {
            let text = c["text"]?.stringValue ?? ""
            let ids = tok.encode(text, addSpecialTokens: true)
            XCTAssertEqual(ids, ints(c["ids"]), text)
            XCTAssertEqual(tok.decode(Array(ids.dropFirst()), skipSpecialTokens: true), c["decoded"]?.stringValue, text)
        }
    }
}
