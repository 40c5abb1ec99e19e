import Foundation
import GraftFormats
@testable import GraftModels
import GraftText
import GraftAdapters
import GraftTensor
import XCTest
import GraftTestSupport

/// all-MiniLM-L6-v2 against transformers 5.24 / sentence-transformers 6.2 (fixtures models/minilm).
final class MiniLMTests: XCTestCase {
    func testTokenIdsEqualHFTokenizers() throws {
        let model = try fetchedModel("minilm")
        let tok = try TokenizerLoader.load(path: model + "/tokenizer.json")
        let ref = try fixtureJSON("models/minilm/tokens.json")
        let texts = ref["texts"]?.arrayValue?.compactMap(\.stringValue) ?? []
        XCTAssertFalse(texts.isEmpty)
        for (i, t) in texts.enumerated() {
            XCTAssertEqual(tok.encode(t, addSpecialTokens: true), ints(ref["input_ids"]?.arrayValue?[i]), t)
        }
    }

    func testWordPieceEdgeCases() throws {
        let tok = try TokenizerLoader.load(path: try fetchedModel("minilm") + "/tokenizer.json")
        // Accents stripped and lowercased; CJK characters split; control characters dropped; unknown → [UNK].
        XCTAssertEqual(tok.encode("Café", addSpecialTokens: false), tok.encode("cafe", addSpecialTokens: false))
        XCTAssertEqual(tok.encode("a\u{0007}b", addSpecialTokens: false), tok.encode("ab", addSpecialTokens: false))
        XCTAssertEqual(tok.encode("中文", addSpecialTokens: false).count, 2)
        XCTAssertEqual(tok.encode("[CLS] hi [SEP]", addSpecialTokens: false).first, 101)
        XCTAssertEqual(tok.encode("\u{10FFFF}", addSpecialTokens: false), [100])
        XCTAssertEqual(tok.decode(tok.encode("Hello, world!", addSpecialTokens: true), skipSpecialTokens: true), "hello, world!")
    }

    func testHiddenStatesAndEmbeddingsMatchSentenceTransformers() throws {
        let enc = try SentenceEncoder(folder: try fetchedModel("minilm"))
        let ref = try fixtureJSON("models/minilm/tokens.json")
        let texts = ref["texts"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let hidden = try Checkpoint(path: referenceRoot + "/models/minilm/hidden.safetensors")
        let embRef = try Checkpoint(path: referenceRoot + "/models/minilm/embeddings.safetensors")
        // One batch with padding, so masks are exercised.
        let states = try enc.model.forward(texts.map(enc.tokenize))
        var worst: Float = 0
        for (i, s) in states.enumerated() {
            let want = try hidden.tensor("t\(i)").floats()
            XCTAssertEqual(s.count, want.count)
            for j in want.indices { worst = max(worst, abs(s[j] - want[j])) }
        }
        XCTAssertLessThanOrEqual(worst, 1e-4, "last_hidden_state max |diff|")
        let embs = try enc.embed(texts, batchSize: 2)
        for (i, e) in embs.enumerated() {
            let want = try embRef.tensor("t\(i)").floats()
            let cos = zip(e, want).reduce(0) { $0 + $1.0 * $1.1 } / (norm(e) * norm(want))
            XCTAssertGreaterThanOrEqual(cos, 0.99999, "text \(i)")
        }
    }

    func norm(_ v: [Float]) -> Float { v.reduce(0) { $0 + $1 * $1 }.squareRoot() }

    /// The opt-in bf16 products (graft embed --bf16): embeddings stay within cosine 0.9999 of
    /// sentence-transformers' float32 ones.
    func testBF16EmbeddingsStayClose() throws {
        var enc = try SentenceEncoder(folder: try fetchedModel("minilm"))
        enc.enableBF16()
        let texts = try fixtureJSON("models/minilm/tokens.json")["texts"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let embRef = try Checkpoint(path: referenceRoot + "/models/minilm/embeddings.safetensors")
        var worst: Float = 1
        for (i, e) in try enc.embed(texts, batchSize: 4).enumerated() {
            let want = try embRef.tensor("t\(i)").floats()
            worst = min(worst, zip(e, want).reduce(0) { $0 + $1.0 * $1.1 } / (norm(e) * norm(want)))
        }
        XCTAssertGreaterThanOrEqual(worst, 0.9999)
        XCTAssertLessThan(worst, 0.9999999, "bf16 rounding must show: otherwise the bf16 path did not run")
    }

    func testLongInputIsTruncatedToTheModelsLength() throws {
        let enc = try SentenceEncoder(folder: try fetchedModel("minilm"))
        let ids = enc.tokenize(String(repeating: "word ", count: 1000))
        XCTAssertEqual(ids.count, enc.maxLength)
        XCTAssertEqual(ids.last, 102)
        XCTAssertThrowsError(try enc.model.forward([[Int](repeating: 1000, count: 600)])) { XCTAssertTrue("\($0)".contains("exceeds")) }
        XCTAssertThrowsError(try enc.model.forward([[999_999]])) { XCTAssertTrue("\($0)".contains("outside the vocabulary")) }
    }
}

/// The PEFT adapter peft-minilm-seqcls (LoRA on query/value + classifier), applied without fusing.
final class MiniLMAdapterTests: XCTestCase {
    /// Also with the weights packed for inference, before the adapter is attached (the packed query/key/
    /// value product must give way to the LoRA-carrying layers) and after.
    func testSequenceClassificationLogitsMatchPEFT() throws {
        let folder = try fetchedModel("minilm")
        let adapter = try LoRAAdapter(path: referenceRoot + "/models/peft-minilm-seqcls")
        guard let (w, b) = try adapter.classificationHead() else { return XCTFail("no classifier in the adapter") }
        let head = Linear(weight: FloatBuffer(w), bias: b.map { FloatBuffer($0) }, inFeatures: w.shape[1], outFeatures: w.shape[0])
        let ref = try fixtureJSON("models/peft-minilm-seqcls/expected.json")
        let texts = ref["texts"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let want = ref["logits"]?.arrayValue?.map { $0.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [] } ?? []
        for order in ["unpacked", "packed, then attached", "attached, then packed"] {
            var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
            if order.hasPrefix("packed") { bert.packForInference() }
            try bert.attach(adapter.layerUpdates(dropout: 0), source: adapter.path)
            if order.hasPrefix("attached") { bert.packForInference() }
            let clf = try BertForSequenceClassification(encoder: bert, tokenizer: try TokenizerLoader.load(path: folder + "/tokenizer.json"), head: head)
            let got = try clf.logits(texts)
            XCTAssertEqual(got.count, want.count)
            for (g, w) in zip(got, want) { for (a, b) in zip(g, w) { XCTAssertEqual(a, b, accuracy: 1e-4, order) } }
        }
    }

    func testAdapterForAnotherModelIsRefused() throws {
        var bert = try BertModel(checkpoint: try Checkpoint(path: try fetchedModel("minilm")))
        let adapter = try LoRAAdapter(path: referenceRoot + "/models/peft-smollm2-lora")
        XCTAssertThrowsError(try bert.attach(adapter.layerUpdates(dropout: 0), source: adapter.path)) { XCTAssertTrue("\($0)".contains("q_proj"), "\($0)") }
    }
}
