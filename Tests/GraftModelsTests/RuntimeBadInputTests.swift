import Foundation
import GraftFormats
@testable import GraftModels
import GraftText
import XCTest
import GraftTestSupport

/// Bad input to the runtime: a clear error naming what is wrong.
final class RuntimeBadInputTests: XCTestCase {
    func tmp() throws -> String {
        let d = NSTemporaryDirectory() + "graft-rt-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    func testMissingAndCorruptModelFiles() throws {
        XCTAssertThrowsError(try ModelLocator.resolve("no-such-model")) { XCTAssertTrue("\($0)".contains("not found")) }
        let d = try tmp()
        FileManager.default.createFile(atPath: d + "/x.gguf", contents: Data("GGUF garbage".utf8))
        XCTAssertThrowsError(try CausalLM(gguf: d + "/x.gguf")) { XCTAssertTrue("\($0)".contains(d + "/x.gguf"), "\($0)") }
        XCTAssertThrowsError(try SentenceEncoder(folder: d)) { XCTAssertTrue("\($0)".contains(d), "\($0)") }
    }

    func testTruncatedRealGGUFIsAnError() throws {
        let src = try fetchedModel("smollm2")
        let file = try FileManager.default.contentsOfDirectory(atPath: src).first { $0.hasSuffix(".gguf") }!
        let bytes = try Data(contentsOf: URL(fileURLWithPath: src + "/" + file))
        let d = try tmp()
        FileManager.default.createFile(atPath: d + "/cut.gguf", contents: bytes.prefix(bytes.count / 2))
        XCTAssertThrowsError(try GGUFFile(path: d + "/cut.gguf")) { XCTAssertTrue("\($0)".contains("runs past the end"), "\($0)") }
    }

    func testUnknownArchitectureIsNamed() throws {
        // A GGUF whose general.architecture is not llama.
        var b: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
        u32(3); u64(0); u64(1)
        str("general.architecture"); u32(8); str("mamba")
        let d = try tmp()
        FileManager.default.createFile(atPath: d + "/m.gguf", contents: Data(b))
        XCTAssertThrowsError(try LlamaModel(gguf: try GGUFFile(path: d + "/m.gguf"))) {
            XCTAssertTrue("\($0)".contains("'mamba'") && "\($0)".contains("supported: llama"), "\($0)")
        }
    }

    func testPromptLongerThanContext() throws {
        let lm = try SmolLM2Tests.lm.get()
        var cache = lm.model.makeCache()
        let tooLong = [Int](repeating: 504, count: lm.model.config.contextLength + 1)
        XCTAssertThrowsError(try lm.model.forward(tooLong, cache: &cache)) { XCTAssertTrue("\($0)".contains("exceed the model's context")) }
        XCTAssertThrowsError(try lm.model.forward([lm.model.config.vocab], cache: &cache)) { XCTAssertTrue("\($0)".contains("outside the vocabulary")) }
    }

    func testUnknownChatTemplateNamesTheOption() {
        XCTAssertThrowsError(try ChatTemplate(template: "{% for m in messages %}{% include 'turn.jinja' %}{% endfor %}")) {
            XCTAssertTrue("\($0)".contains("--chat-template"), "\($0)")
            XCTAssertTrue("\($0)".contains("line 1: the statement 'include' is not supported"), "\($0)")
        }
    }

    func testInvalidUTF8IsReplacedNotFatal() throws {
        let lm = try SmolLM2Tests.lm.get()
        let text = String(decoding: [0x48, 0x69, 0xFF, 0xFE], as: UTF8.self)  // invalid bytes become U+FFFD
        XCTAssertFalse(lm.tokenizer.encode(text, addSpecialTokens: false).isEmpty)
    }
}
