import Foundation
import GraftFormats
import GraftText
import XCTest
import GraftTestSupport

/// A "llama" (SentencePiece BPE) GGUF vocabulary against llama.cpp's own tokenizer
/// (Tests/Fixtures/gguf/spm-expected.json, made by scripts/reference/make-spm-references.py: the vocabulary
/// and llama.cpp's ids for each text). The test writes the vocabulary into a GGUF with Graft's writer.
final class SentencePieceTests: XCTestCase {
    func testTokenizationAndDecodingEqualLlamaCpp() throws {
        let ref = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: projectRoot + "/Tests/Fixtures/gguf/spm-expected.json"))))
        let v = try XCTUnwrap(ref["vocab"])
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("tokenizer.ggml.model", .string("llama"))
        w.set("tokenizer.ggml.tokens", .array((v["tokens"]?.arrayValue ?? []).map { .string($0.stringValue ?? "") }))
        w.set("tokenizer.ggml.scores", .array((v["scores"]?.arrayValue ?? []).map { .float($0.doubleValue ?? 0) }))
        w.set("tokenizer.ggml.token_type", .array((v["types"]?.arrayValue ?? []).map { .int($0.intValue ?? 1) }))
        for (k, key) in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id")] {
            w.set("tokenizer.ggml." + key, .uint(UInt64(v[k]?.intValue ?? 0)))
        }
        w.set("tokenizer.ggml.add_bos_token", .bool(v["add_bos"]?.boolValue ?? true))
        w.set("tokenizer.ggml.add_space_prefix", .bool(v["add_space_prefix"]?.boolValue ?? true))
        let path = NSTemporaryDirectory() + "graft-spm-\(UUID().uuidString).gguf"
        try w.write(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }

        let tok = try TokenizerLoader.load(model: path)
        XCTAssertTrue(tok is SentencePieceBPETokenizer)
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
