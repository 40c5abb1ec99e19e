import Foundation
import GraftFormats
@testable import GraftModels
import GraftText
import XCTest
import GraftTestSupport

/// GGUF → HF folder → GGUF round trip on SmolLM2, each step loaded and run by Graft.
/// (transformers and llama.cpp load these outputs too: checked with the peer environment, see the issue note.)
final class ConvertTests: XCTestCase {
    func testRoundTripKeepsTokensAndLogits() throws {
        let src = try fetchedModel("smollm2")
        let gguf = src + "/" + (try FileManager.default.contentsOfDirectory(atPath: src).first { $0.hasSuffix(".gguf") }!)
        let tmp = NSTemporaryDirectory() + "graft-convert-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp + "/hf", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try LlamaGGUFConversion.ggufToHF(try GGUFFile(path: gguf), into: tmp + "/hf", dtype: .f32, maxShardBytes: 200_000_000)
        XCTAssertTrue(FileManager.default.fileExists(atPath: tmp + "/hf/model.safetensors.index.json"))  // sharded
        try LlamaGGUFConversion.hfToGGUF(folder: tmp + "/hf", to: tmp + "/rt.gguf", type: .f32)

        let original = try SmolLM2Tests.lm.get()
        let folder = try CausalLM(folder: tmp + "/hf")
        let back = try CausalLM(gguf: tmp + "/rt.gguf")
        let ref = try fixtureJSON("models/smollm2/tokens.json")
        let texts = ref["texts"]?.arrayValue?.compactMap(\.stringValue) ?? []
        for t in texts {
            XCTAssertEqual(folder.tokenizer.encode(t, addSpecialTokens: false), original.tokenizer.encode(t, addSpecialTokens: false), t)
            XCTAssertEqual(back.tokenizer.encode(t, addSpecialTokens: false), original.tokenizer.encode(t, addSpecialTokens: false), t)
        }
        XCTAssertEqual(folder.chatTemplate?.source, original.chatTemplate?.source)
        XCTAssertEqual(folder.chatTemplate?.specialTokens, original.chatTemplate?.specialTokens)
        let ids = ints(ref["input_ids"]?.arrayValue?[0])
        func logits(_ lm: CausalLM) throws -> [Float] { var c = lm.model.makeCache(); return try lm.model.forward(ids, cache: &c, allLogits: true).last! }
        let a = try logits(original), b = try logits(folder), c = try logits(back)
        XCTAssertLessThanOrEqual(zip(a, b).map { abs($0 - $1) }.max()!, 1e-4)
        XCTAssertLessThanOrEqual(zip(a, c).map { abs($0 - $1) }.max()!, 1e-4)
    }

    func testConvertRefusesOtherArchitectures() throws {
        let tmp = NSTemporaryDirectory() + "graft-convert-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        XCTAssertThrowsError(try LlamaGGUFConversion.hfToGGUF(folder: try fetchedModel("minilm"), to: tmp + "/x.gguf", type: .f16)) {
            XCTAssertTrue("\($0)".contains("BertModel") && "\($0)".contains("LlamaForCausalLM"), "\($0)")
        }
    }
}
