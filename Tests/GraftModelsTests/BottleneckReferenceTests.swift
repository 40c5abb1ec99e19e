import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor
import GraftText
import XCTest
import GraftTestSupport

/// Bottleneck adapters against AdapterHub `adapters` 1.3 (fixtures made by
/// scripts/reference/make-bottleneck-reference.py, every adapter tensor moved off its initialisation):
/// AdapterHub's saved folders read as they are, the loss and logits of one batch, and the gradient of
/// every adapter tensor (and the head) — loss to 1e-5, gradients to 1e-3 relative, as PEFT's.
final class BottleneckReferenceTests: XCTestCase {
    /// The folder's sublayer updates made trainable and attached; their gradients by saved name.
    static func attach<M: AdaptableModel>(_ adapter: any LoadedAdapter, to model: inout M) throws -> [String: FloatBuffer] {
        var grads: [String: FloatBuffer] = [:]
        let sites = adapter.sublayerUpdates()
        XCTAssertFalse(sites.isEmpty)
        for s in sites {
            s.update.makeTrainable()
            try model.attach(s.update, layer: s.layer, site: s.site, source: adapter.path)
            for p in s.update.parameters { grads[s.prefix + p.suffix] = p.gradient }
        }
        return grads
    }

    func miniLM(_ fixture: String) throws {
        let dir = referenceRoot + "/models/" + fixture
        let adapter = try AdapterMethods.open(dir)
        XCTAssertEqual(adapter.method, "bottleneck")
        let folder = try fetchedModel("minilm")
        var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        var grads = try Self.attach(adapter, to: &bert)
        let (w, b) = try XCTUnwrap(try adapter.classificationHead())
        var head = Linear(weight: FloatBuffer(FloatBuffer(w).array), bias: b.map { FloatBuffer(FloatBuffer($0).array) }, inFeatures: w.shape[1], outFeatures: w.shape[0])
        let hg = LinearGradients.zeros(for: head)
        head.gradients = hg
        grads["classifier.weight"] = hg.weight; grads["classifier.bias"] = hg.bias
        let clf = try BertForSequenceClassification(encoder: bert, tokenizer: try TokenizerLoader.load(path: folder + "/tokenizer.json"), head: head)
        let batch = try fixtureJSON("models/\(fixture)/batch.json")
        let ids = GradientReferenceTests.unpadded(batch)
        let (logits, tape) = try clf.forwardTraining(ids, rng: Optional<UnsafeMutablePointer<SeededRNG>>.none)
        let (sum, count, dLogits) = Loss.crossEntropy(logits, classes: head.outFeatures, targets: ints(batch["labels"]))
        let expected = try fixtureJSON("models/\(fixture)/expected.json")
        let want = try XCTUnwrap(expected["loss"]?.doubleValue)
        XCTAssertEqual(sum / Double(count), want, accuracy: 1e-5 * want)
        let inference = try clf.logits(ids: ids)
        for (i, row) in (expected["logits"]?.arrayValue ?? []).enumerated() {
            for (j, v) in (row.arrayValue?.compactMap(\.doubleValue) ?? []).enumerated() {
                XCTAssertEqual(Double(logits[i * head.outFeatures + j]), v, accuracy: 1e-4, "training logits")
                XCTAssertEqual(Double(inference[i][j]), v, accuracy: 1e-4, "inference logits")
            }
        }
        clf.backward(dLogits, tape: tape)
        try GradientReferenceTests.compare(grads, reference: dir + "/grads.safetensors")
    }

    /// Pfeiffer's serial adapter after the feed-forward block, on its LayerNorm of h + r (applied twice).
    func testMiniLMSeqBnMatchesAdapterHub() throws { try miniLM("bottleneck-minilm-seqbn") }
    /// Houlsby's: serial after attention and after the feed-forward block, on h, swish.
    func testMiniLMHoulsbyMatchesAdapterHub() throws { try miniLM("bottleneck-minilm-houlsby") }
    /// The parallel adapter on the feed-forward block's input, scaled by 4.
    func testMiniLMParBnMatchesAdapterHub() throws { try miniLM("bottleneck-minilm-parbn") }

    func smolLM2(_ fixture: String) throws {
        let dir = referenceRoot + "/models/" + fixture
        let adapter = try AdapterMethods.open(dir)
        var lm = try CausalLM(path: try fetchedSmolLM2GGUF())
        let grads = try Self.attach(adapter, to: &lm.model)
        let (ids, targets) = try GradientReferenceTests.causalLMBatch(fixture)
        let (sum, count) = try lm.model.causalLMLoss(ids, targets: targets, rng: nil)
        let expected = try fixtureJSON("models/\(fixture)/expected.json")
        let want = try XCTUnwrap(expected["loss"]?.doubleValue)
        XCTAssertEqual(sum / Double(count), want, accuracy: 1e-5 * want)
        try GradientReferenceTests.compare(grads, reference: dir + "/grads.safetensors")
        // The KV-cache path (generation) applies the adapters too: each sequence's last-position logits.
        let last = try XCTUnwrap(expected["logits_last"]?.arrayValue)
        for (s, x) in ids.enumerated() {
            var cache = lm.model.makeCache()
            let logits = try lm.model.forward(x, cache: &cache)[0]
            let ref = last[s].arrayValue?.compactMap(\.doubleValue) ?? []
            var worst = 0.0
            for (j, v) in ref.enumerated() { worst = max(worst, abs(Double(logits[j]) - v)) }
            XCTAssertLessThan(worst, 2e-3, "sequence \(s): last-position logits")
        }
    }

    /// Llama: serial on the residual stream after the MLP (no norm to reuse: f(h + r)).
    func testSmolLM2SeqBnMatchesAdapterHub() throws { try smolLM2("bottleneck-smollm2-seqbn") }
    /// Llama: parallel to the MLP, on the residual stream before its norm.
    func testSmolLM2ParBnMatchesAdapterHub() throws { try smolLM2("bottleneck-smollm2-parbn") }
}
