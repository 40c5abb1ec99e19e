import Foundation
import GraftAdapters
import GraftFormats
@testable import GraftModels
import GraftText
import XCTest
import GraftTestSupport

/// SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to float32) against transformers 5.24 (fixtures models/smollm2).
final class SmolLM2Tests: XCTestCase {
    static let lm: Result<CausalLM, Error> = Result {
        let p = graftHome + "/models/smollm2"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: p))?.filter { $0.hasSuffix(".gguf") } ?? []
        guard let f = files.first else { throw ModelError("SmolLM2 is not in \(p): run scripts/fetch-models (make test does)") }
        return try CausalLM(gguf: p + "/" + f)
    }

    func model() throws -> CausalLM {
        do { return try Self.lm.get() } catch { XCTFail("\(error)"); throw error }
    }

    func testTokenIdsAndChatPromptEqualTransformers() throws {
        let lm = try model()
        let ref = try fixtureJSON("models/smollm2/tokens.json")
        let texts = ref["texts"]?.arrayValue?.compactMap(\.stringValue) ?? []
        XCTAssertEqual(texts.count, 4)
        for (i, t) in texts.enumerated() {
            XCTAssertEqual(lm.tokenizer.encode(t, addSpecialTokens: false), ints(ref["input_ids"]?.arrayValue?[i]), t)
            XCTAssertEqual(lm.tokenizer.decode(lm.tokenizer.encode(t, addSpecialTokens: false)), t)
        }
        let messages = (ref["chat_messages"]?.arrayValue ?? []).map {
            ChatMessage(role: $0["role"]?.stringValue ?? "", content: $0["content"]?.stringValue ?? "")
        }
        let prompt = try XCTUnwrap(lm.chatTemplate).render(messages)
        XCTAssertEqual(lm.chatTemplate?.specialTokens["eos_token"], "<|im_end|>")
        XCTAssertEqual(prompt, ref["chat_prompt"]?.stringValue)
        XCTAssertEqual(lm.tokenizer.encode(prompt, addSpecialTokens: true), ints(ref["chat_prompt_ids"]))
    }

    func testLogitsMatchTransformers() throws {
        let lm = try model()
        let ref = try fixtureJSON("models/smollm2/tokens.json")
        let logits = try Checkpoint(path: referenceRoot + "/models/smollm2/logits.safetensors")
        let all = ref["input_ids"]?.arrayValue ?? []
        for (i, idsV) in all.enumerated() {
            let ids = ints(idsV)
            var cache = lm.model.makeCache()
            let got = try lm.model.forward(ids, cache: &cache, allLogits: i == 0)
            var wants: [[Float]] = [try logits.tensor("p\(i).last").floats()]
            var gots = [got.last!]
            if i == 0 {
                let full = try logits.tensor("p0.all").floats()
                let v = lm.model.config.vocab
                wants = (0..<ids.count).map { Array(full[($0 * v)..<(($0 + 1) * v)]) }
                gots = got
            }
            for (g, w) in zip(gots, wants) {
                let d = zip(g, w).map { abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(d, 1e-3, "text \(i): max |diff|")
                XCTAssertEqual(g.indices.max { g[$0] < g[$1] }, w.indices.max { w[$0] < w[$1] }, "text \(i): argmax")
            }
        }
    }

    func testIncrementalDecodingEqualsBatchedPrefill() throws {
        let lm = try model()
        let ids = lm.tokenizer.encode("Once upon a time, in a small village,", addSpecialTokens: false)
        var c1 = lm.model.makeCache()
        let batched = try lm.model.forward(ids, cache: &c1)[0]
        var c2 = lm.model.makeCache()
        _ = try lm.model.forward(Array(ids.prefix(4)), cache: &c2)
        var step: [Float] = []
        for id in ids.dropFirst(4) { step = try lm.model.forward([id], cache: &c2)[0] }
        XCTAssertLessThanOrEqual(zip(batched, step).map { abs($0 - $1) }.max()!, 1e-3)
    }

    func testGreedyContinuationOfTheChatPromptEqualsTransformers() throws {
        let lm = try model()
        let ref = try fixtureJSON("models/smollm2/generate.json")
        let want = ints(ref["greedy_ids"])
        let (ids, stats) = try lm.generate(prompt: ints(ref["prompt_ids"]), maxTokens: want.count + 8, sampling: SamplingOptions())
        XCTAssertEqual(ids, want)
        XCTAssertEqual(lm.tokenizer.decode(ids, skipSpecialTokens: false), ref["greedy_text"]?.stringValue)
        XCTAssertEqual(stats.generatedTokens, want.count)
    }

    func testSamplingIsSeededAndRespectsTopK() throws {
        let lm = try model()
        let prompt = lm.tokenizer.encode("Once upon a time", addSpecialTokens: false)
        var o = SamplingOptions()
        o.temperature = 0.9; o.topK = 40; o.topP = 0.95; o.seed = 7
        let a = try lm.generate(prompt: prompt, maxTokens: 12, sampling: o, ignoreEOS: true).ids
        let b = try lm.generate(prompt: prompt, maxTokens: 12, sampling: o, ignoreEOS: true).ids
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.count, 12)
        var s = Sampler(SamplingOptions())
        XCTAssertEqual(s.next([0, 3, 1]), 1)
        var k1 = SamplingOptions(); k1.temperature = 1; k1.topK = 1
        var s1 = Sampler(k1)
        for _ in 0..<20 { XCTAssertEqual(s1.next([0.5, 0.1, 0.7, 0.2]), 2) }
    }

    /// peft-smollm2-lora (q_proj/v_proj, r = 8) applied without fusing: last-position logits equal PEFT's.
    func testPEFTAdapterLogits() throws {
        var lm = try model()
        let adapter = try LoRAAdapter(path: referenceRoot + "/models/peft-smollm2-lora")
        try lm.model.attach(adapter.layerUpdates(dropout: 0), source: adapter.path)
        let ref = try fixtureJSON("models/smollm2/tokens.json")
        let expected = try Checkpoint(path: referenceRoot + "/models/peft-smollm2-lora/expected.safetensors")
        for (i, idsV) in (ref["input_ids"]?.arrayValue ?? []).enumerated() {
            let name = "p\(i).last"
            var cache = lm.model.makeCache()
            let got = try lm.model.forward(ints(idsV), cache: &cache)[0]
            let want = try expected.tensor(name).floats()
            XCTAssertLessThanOrEqual(zip(got, want).map { abs($0 - $1) }.max()!, 1e-3, name)
        }
    }
}

/// Decode with 8-bit activations and integer dot products (llama.cpp's arithmetic), opt-in.
final class Int8DecodeTests: XCTestCase {
    /// One decode step against the float path. Quantising activations to 8 bits per block moves the
    /// logits by up to a few tenths here (measured 0.26–0.45 on SmolLM2), enough to swap near-tied tokens,
    /// which is why the float path stays the default.
    func testInt8DecodeStaysCloseToFloatDecode() throws {
        var lm = try SmolLM2Tests.lm.get()
        lm.model.decodeArithmetic = .int8
        let prompt = lm.tokenizer.encode("Once upon a time, in a small village,", addSpecialTokens: false)
        var exact = lm.model
        exact.decodeArithmetic = .float
        var c1 = lm.model.makeCache(), c2 = exact.makeCache()
        _ = try lm.model.forward(Array(prompt.dropLast()), cache: &c1)
        _ = try exact.forward(Array(prompt.dropLast()), cache: &c2)
        let a = try lm.model.forward([prompt.last!], cache: &c1)[0], b = try exact.forward([prompt.last!], cache: &c2)[0]
        let d = zip(a, b).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(d, 0)     // the integer path really ran
        XCTAssertLessThan(d, 1.0)      // logits span ≈ 30; an error of this size is a few percent of one logit step
        XCTAssertEqual(a.indices.max { a[$0] < a[$1] }, b.indices.max { b[$0] < b[$1] })
    }
}
