import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor
import GraftText
import XCTest
import GraftTestSupport

/// Backward passes against PyTorch + PEFT: the loss and every adapter gradient of one batch
/// (fixtures grad-minilm-seqcls, grad-smollm2-lora). Loss to 1e-5 relative, each gradient tensor to
/// 1e-3 relative (‖g − g_ref‖ / ‖g_ref‖).
final class GradientReferenceTests: XCTestCase {
    /// The adapter's updates (their own writable copies of the tensors) made trainable and handed to
    /// `attach`. Returns the gradient buffers by PEFT tensor name.
    static func attachTrainable(_ adapter: any LoadedAdapter, attach: (String, any LayerUpdate) throws -> Void) throws -> [String: FloatBuffer] {
        try attachTrainableModules(adapter, attach: attach).grads
    }

    /// As `attachTrainable`, also returning the attached updates (for the method's training hook).
    static func attachTrainableModules(_ adapter: any LoadedAdapter, attach: (String, any LayerUpdate) throws -> Void) throws
        -> (grads: [String: FloatBuffer], modules: [TrainedModule]) {
        var grads: [String: FloatBuffer] = [:], modules: [TrainedModule] = []
        for (name, u) in adapter.layerUpdates(dropout: 0) {
            u.makeTrainable()
            try attach(name, u)
            for p in u.parameters { grads[LoRAAdapter.prefix + name + "." + p.suffix] = p.gradient }
            modules.append((name, u))
        }
        return (grads, modules)
    }

    /// The method's own loss term (AdaLoRA's weighted orthogonality regulariser; 0 for the methods
    /// without one), its gradient added to the updates' as the trainer adds it before each step.
    static func methodTerm(_ adapter: any LoadedAdapter, _ modules: [TrainedModule]) throws -> Double {
        try adapter.recipe(dropout: 0).makeTrainingHook(modules: modules, totalSteps: 10, seed: 0)?.beforeOptimizerStep() ?? 0
    }

    /// The fixture's loss check: the task's loss (`task_loss` when the fixture has a method term, else
    /// `loss`) and, with the method's term, the total PEFT reports as `loss`.
    static func checkLoss(_ taskLoss: Double, term: Double, fixture: String, tolerance: Double, file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try fixtureJSON("models/\(fixture)/expected.json")
        let want = expected["loss"]?.doubleValue ?? .nan
        if let task = expected["task_loss"]?.doubleValue {
            XCTAssertEqual(taskLoss, task, accuracy: tolerance * abs(task), "task loss", file: file, line: line)
            XCTAssertNotEqual(term, 0, "the fixture has a method term but the method added none", file: file, line: line)
        }
        XCTAssertEqual(taskLoss + term, want, accuracy: tolerance * abs(want), "loss", file: file, line: line)
    }

    /// A fixture batch's sequences without their (right) padding.
    static func unpadded(_ batch: JSONValue) -> [[Int]] {
        let masks = batch["attention_mask"]?.arrayValue?.map(ints) ?? []
        return zip(batch["input_ids"]?.arrayValue?.map(ints) ?? [], masks).map { ids, m in Array(ids.prefix(m.reduce(0, +))) }
    }

    /// A causal-LM fixture's sequences and next-token targets: HF shifts, so position i predicts label
    /// i + 1; -100 is no target.
    static func causalLMBatch(_ fixture: String) throws -> (ids: [[Int]], targets: [[Int?]]) {
        let batch = try fixtureJSON("models/\(fixture)/batch.json")
        let ids = unpadded(batch)
        let labels = batch["labels"]?.arrayValue?.map { $0.arrayValue?.map { $0.intValue.map(Int.init) ?? -100 } ?? [] } ?? []
        return (ids, zip(ids, labels).map { ids, l in (0..<ids.count).map { i -> Int? in i + 1 < l.count && l[i + 1] != -100 ? l[i + 1] : nil } })
    }

    /// The adapter's virtual tokens (prompt or prefix tuning), if it has any, made trainable and attached;
    /// their gradient under PEFT's saved name.
    static func attachVirtualTokens<M: AdaptableModel>(_ adapter: any LoadedAdapter, to model: inout M) throws -> [String: FloatBuffer] {
        guard let tokens = try adapter.virtualTokens() else { return [:] }
        tokens.makeTrainable()
        try model.attach(tokens, source: adapter.path)
        return ["prompt_embeddings": tokens.gradient!]
    }

    static func compare(_ grads: [String: FloatBuffer], reference path: String, tolerance: Double = 1e-3,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try SafetensorsFile(path: path)
        XCTAssertEqual(Set(ref.tensors.map(\.name)), Set(grads.keys), file: file, line: line)
        var worst = 0.0
        for info in ref.tensors {
            guard let g = grads[info.name] else { continue }
            let r = FloatBuffer(try ref.tensor(info.name)).values, v = g.values
            XCTAssertEqual(r.count, v.count, info.name, file: file, line: line)
            var num = 0.0, den = 0.0
            for i in 0..<min(r.count, v.count) { let d = Double(v[i] - r[i]); num += d * d; den += Double(r[i]) * Double(r[i]) }
            let rel = (num / max(den, 1e-30)).squareRoot()
            worst = max(worst, rel)
            XCTAssertLessThan(rel, tolerance, "\(info.name): relative error \(rel)", file: file, line: line)
        }
        print("worst relative gradient error: \(worst)")
    }

    func testMiniLMSequenceClassificationGradientsMatchPEFT() throws { try miniLM(bf16: false) }

    /// DoRA (PEFT's use_dora, magnitudes moved off their initial norms): loss and A, B, magnitude and
    /// classifier gradients (fixture made by scripts/reference/make-dora-grad-reference.py).
    func testMiniLMDoRAGradientsMatchPEFT() throws { try miniLM(bf16: false, fixture: "grad-minilm-dora") }

    /// (IA)³ with PEFT's BERT defaults (key and value outputs scaled; both output.dense layers — PEFT's
    /// suffix rule takes attention.output.dense too — scaled at their input), vectors moved off their ones.
    func testMiniLMIA3GradientsMatchPEFT() throws { try miniLM(bf16: false, fixture: "grad-minilm-ia3") }

    /// VeRA (shared random projections sized by the widest target — the feed-forward output.dense —
    /// narrower layers using their leading columns; λ_b moved off its zeros), every gradient and PEFT's logits.
    func testMiniLMVeRAGradientsMatchPEFT() throws { try miniLM(bf16: false, fixture: "grad-minilm-vera") }

    /// LoRA on PEFT's `dense` target, which includes `bert.pooler.dense`: the pooler's update trains
    /// and every gradient matches.
    /// Prompt tuning (8 virtual tokens, PEFT's TEXT init) ahead of the batch: the pooler reads the first
    /// virtual token, as in PEFT. Loss, logits (training and inference paths) and the prompt's and head's
    /// gradients (fixture made by scripts/reference/make-prompt-grad-reference.py).
    func testMiniLMPromptTuningGradientsMatchPEFT() throws { try miniLM(bf16: false, fixture: "grad-minilm-prompt") }

    /// AdaLoRA (init_r 6, E moved off its zeros): the task loss, the orthogonality regulariser PEFT adds
    /// to it, and the A, E, B and head gradients of both (make-adalora-reference.py).
    func testMiniLMAdaLoRAGradientsMatchPEFT() throws { try miniLM(bf16: false, fixture: "grad-minilm-adalora") }

    /// Prefix tuning (4 virtual keys and values in each layer; the tokens' positions start after them).
    func testMiniLMPrefixTuningGradientsMatchPEFT() throws { try miniLM(bf16: false, fixture: "grad-minilm-prefix") }

    func testMiniLMLoRAOnEveryDenseLayerIncludingThePoolerMatchesPEFT() throws {
        try miniLM(bf16: false, fixture: "grad-minilm-lora-dense")
    }

    /// bf16 products (inputs rounded to 8 mantissa bits, float32 sums) stay close to float32 PyTorch:
    /// loss to 1e-3, gradients to 3e-2 relative — the rounding, not a wiring error (which would be O(1)).
    func testMiniLMGradientsWithBF16ProductsStayClose() throws { try miniLM(bf16: true) }

    /// Float32 products over weights packed once (`Linear.packForTraining`, what training uses where it
    /// measured faster than BLAS): the same arithmetic in another order, so PEFT's tolerances hold.
    func testMiniLMGradientsWithPackedFloat32ProductsMatchPEFT() throws {
        let saved = KernelChoices.active
        defer { KernelChoices.apply(saved) }
        var packed = saved
        packed.packedTraining = true
        KernelChoices.apply(packed)
        var sawPacked = false
        try miniLM(bf16: false) { bert in
            bert.packForTraining(bf16: false)
            sawPacked = bert.linear("encoder.layer.0.attention.self.query")?.f32Training?.backward != nil
        }
        XCTAssertTrue(sawPacked, "the products were not packed")
    }

    /// The fixture's classifier on all-MiniLM-L6-v2 with every adapter tensor (and the head) trainable,
    /// its batch without padding, and the gradient buffers by PEFT tensor name.
    struct MiniLMCase {
        let clf: BertForSequenceClassification
        let grads: [String: FloatBuffer]
        let ids: [[Int]], labels: [Int]
        /// The method's own loss term, its gradient already added.
        let term: Double
    }

    static func miniLMCase(_ fixture: String, configure: (inout BertModel) -> Void) throws -> MiniLMCase {
        let folder = try fetchedModel("minilm")
        let dir = referenceRoot + "/models/" + fixture
        let adapter = try AdapterMethods.open(dir)
        var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        configure(&bert)
        var (grads, modules) = try attachTrainableModules(adapter) { name, u in try bert.attach([(name, u)], source: dir) }
        grads.merge(try attachVirtualTokens(adapter, to: &bert)) { a, _ in a }
        guard let (w, b) = try adapter.classificationHead() else { throw XCTSkip("no classifier in \(dir)") }
        var head = Linear(weight: FloatBuffer(FloatBuffer(w).array), bias: b.map { FloatBuffer(FloatBuffer($0).array) },
                          inFeatures: w.shape[1], outFeatures: w.shape[0])
        let hg = LinearGradients.zeros(for: head)
        head.gradients = hg
        // PEFT saves the head under its PEFT model's prefix: `base_model.model.` for LoRA and the
        // per-layer methods, `base_model.` for prompt learning.
        let headPrefix = adapter is VirtualTokenAdapter ? "base_model." : LoRAAdapter.prefix
        grads[headPrefix + "classifier.weight"] = hg.weight
        grads[headPrefix + "classifier.bias"] = hg.bias
        let clf = try BertForSequenceClassification(encoder: bert, tokenizer: try TokenizerLoader.load(path: folder + "/tokenizer.json"), head: head)
        let batch = try fixtureJSON("models/\(fixture)/batch.json")
        let ids = unpadded(batch)
        return MiniLMCase(clf: clf, grads: grads, ids: ids, labels: ints(batch["labels"]), term: try methodTerm(adapter, modules))
    }

    func miniLM(bf16: Bool, fixture: String = "grad-minilm-seqcls", configure: ((inout BertModel) -> Void)? = nil) throws {
        let c = try Self.miniLMCase(fixture) { if bf16 { $0.enableBF16() }; configure?(&$0) }
        let (clf, grads, ids, labels, head) = (c.clf, c.grads, c.ids, c.labels, c.clf.head)
        let dir = referenceRoot + "/models/" + fixture
        let (logits, tape) = try clf.forwardTraining(ids, rng: Optional<UnsafeMutablePointer<SeededRNG>>.none)
        let (sum, count, dLogits) = Loss.crossEntropy(logits, classes: head.outFeatures, targets: labels)
        try Self.checkLoss(sum / Double(count), term: c.term, fixture: fixture, tolerance: bf16 ? 1e-3 : 1e-5)
        if !bf16, let rows = try fixtureJSON("models/\(fixture)/expected.json")["logits"]?.arrayValue {
            // PEFT's outputs with its adapter, against Graft's inference path (packed products, the
            // updates applied unfused) and its training forward.
            var inference = clf
            inference.encoder.packForInference()
            let fromInference = try inference.logits(ids: ids)
            for (i, row) in rows.enumerated() {
                let ref = row.arrayValue?.compactMap(\.doubleValue) ?? []
                XCTAssertEqual(ref.count, head.outFeatures)
                for (j, v) in ref.enumerated() {
                    XCTAssertEqual(Double(logits[i * head.outFeatures + j]), v, accuracy: 1e-4, "training logits [\(i), \(j)]")
                    XCTAssertEqual(Double(fromInference[i][j]), v, accuracy: 1e-4, "inference logits [\(i), \(j)]")
                }
            }
        }
        clf.backward(dLogits, tape: tape)
        try Self.compare(grads, reference: dir + "/grads.safetensors", tolerance: bf16 ? 3e-2 : 1e-3)
    }
}

extension GradientReferenceTests {
    func testSmolLM2CausalLMGradientsMatchPEFT() throws {
        try smolLM2("grad-smollm2-lora")
    }

    /// (IA)³ on keys, values and the down projection (PEFT's Llama defaults), vectors moved off their
    /// ones (fixture made by scripts/reference/make-ia3-grad-reference.py).
    func testSmolLM2IA3GradientsMatchPEFT() throws { try smolLM2("grad-smollm2-ia3") }

    /// AdaLoRA on q_proj and v_proj, with its orthogonality regulariser.
    func testSmolLM2AdaLoRAGradientsMatchPEFT() throws { try smolLM2("grad-smollm2-adalora") }

    /// VeRA on q_proj [576 → 576] and v_proj [576 → 192], which uses the first 192 rows of vera_B.
    func testSmolLM2VeRAGradientsMatchPEFT() throws { try smolLM2("grad-smollm2-vera") }

    func smolLM2(_ fixture: String) throws {
        let dir = referenceRoot + "/models/" + fixture
        let adapter = try AdapterMethods.open(dir)
        var lm = try CausalLM(path: try fetchedSmolLM2GGUF())
        var (grads, modules) = try Self.attachTrainableModules(adapter) { name, u in try lm.model.attach([(name, u)], source: dir) }
        grads.merge(try Self.attachVirtualTokens(adapter, to: &lm.model)) { a, _ in a }
        let (ids, targets) = try Self.causalLMBatch(fixture)
        let (sum, count) = try lm.model.causalLMLoss(ids, targets: targets, rng: nil)
        try Self.checkLoss(sum / Double(count), term: try Self.methodTerm(adapter, modules), fixture: fixture, tolerance: 1e-5)
        try Self.compare(grads, reference: dir + "/grads.safetensors")
        if let rows = try fixtureJSON("models/\(fixture)/expected.json")["logits_last"]?.arrayValue {
            // PEFT's logits at each sequence's last token, against the inference path (KV cache, the
            // virtual tokens seeded into it).
            for (s, row) in rows.enumerated() {
                var cache = lm.model.makeCache()
                let got = try lm.model.forward(ids[s], cache: &cache)[0]
                let ref = row.arrayValue?.compactMap(\.doubleValue) ?? []
                XCTAssertFalse(ref.isEmpty)
                var worst = 0.0
                for (j, v) in ref.enumerated() { worst = max(worst, abs(Double(got[j]) - v)) }
                XCTAssertLessThan(worst, 2e-3, "sequence \(s): largest logit difference \(worst)")
            }
        }
    }

    /// Prompt tuning (8 virtual tokens from a text of 11 tokens, cut to 8) ahead of the batch: loss and
    /// the prompt's gradient (fixture made by scripts/reference/make-prompt-grad-reference.py).
    func testSmolLM2PromptTuningGradientsMatchPEFT() throws { try smolLM2("grad-smollm2-prompt") }

    /// Prefix tuning with grouped-query attention (4 virtual keys and values of the 3 key/value heads
    /// in each of the 30 layers): loss, the prefix's gradient, and logits through the KV cache.
    func testSmolLM2PrefixTuningGradientsMatchPEFT() throws { try smolLM2("grad-smollm2-prefix") }
}

extension GradientReferenceTests {
    /// With BERT's train-mode dropout on (hidden 0.1, attention 0.1, classifier 0.1), backward is the
    /// gradient of the loss the forward computed with the same masks: central differences on adapter
    /// entries of the first and last layers and the head, the masks fixed by the generator's seed.
    func testMiniLMGradientsWithModelDropoutMatchFiniteDifferences() throws {
        let c = try Self.miniLMCase("grad-minilm-seqcls") { $0.trainingDropout = (0.1, 0.1) }
        let (clf, grads, ids, labels, head) = (c.clf, c.grads, c.ids, c.labels, c.clf.head)
        func loss(backward: Bool) throws -> Double {
            var rng = SeededRNG(seed: 77)
            return try withUnsafeMutablePointer(to: &rng) { r in
                let (logits, tape) = try clf.forwardTraining(ids, rng: r)
                let (sum, count, dl) = Loss.crossEntropy(logits, classes: head.outFeatures, targets: labels)
                if backward { clf.backward(dl, tape: tape) }
                return sum / Double(count)
            }
        }
        let dropped = try loss(backward: true)
        XCTAssertNotEqual(dropped, try fixtureJSON("models/grad-minilm-seqcls/expected.json")["loss"]?.doubleValue ?? 0, "dropout changed the loss")
        var checked = 0
        for name in ["base_model.model.bert.encoder.layer.0.attention.self.value.lora_A.weight",
                     "base_model.model.bert.encoder.layer.5.attention.self.query.lora_B.weight"] {
            guard let g = grads[name] else { return XCTFail("no gradient for \(name)") }
            // The live parameter is the buffer the model holds: find it through the update attached.
            let module = String(name.dropFirst(LoRAAdapter.prefix.count + "bert.".count).dropLast(".lora_X.weight".count))
            guard let lr = clf.encoder.linear(module)?.updates.first as? LoRAUpdate else { return XCTFail("no update on \(module)") }
            let param = name.hasSuffix("lora_A.weight") ? lr.a : lr.b
            let order = (0..<g.count).sorted { abs(g[$0]) > abs(g[$1]) }.prefix(3)
            for i in order {
                let keep = param[i], eps: Float = 2e-3
                param.mutable[i] = keep + eps; let up = try loss(backward: false)
                param.mutable[i] = keep - eps; let down = try loss(backward: false)
                param.mutable[i] = keep
                let fd = (up - down) / Double(2 * eps)
                XCTAssertEqual(Double(g[i]), fd, accuracy: 0.03 * abs(fd) + 1e-5, "\(name)[\(i)]")
                checked += 1
            }
        }
        XCTAssertEqual(checked, 6)
    }
}

extension GradientReferenceTests {
    /// Skipping the padding rows in the products with frozen weights (`TokenRows`, the default) changes
    /// no value where Graft's own kernels multiply (each row's sums run in the same order whatever the
    /// number of rows): the loss and every gradient equal, to the bit, those of the pass that multiplies
    /// the padding too — with model dropout and LoRA dropout on, so the masks line up as well. OpenBLAS's
    /// SGEMM rounds a row differently depending on where it falls in its tiles, so there the two agree to
    /// rounding. The fixture's batch has sequences of different lengths.
    func testSkippingPaddingRowsChangesNothing() throws {
        enum Products { case packedF32, bf16, blas }
        func run(_ products: Products, multipliesPadding: Bool) throws -> (Double, [String: [Float]]) {
            let saved = KernelChoices.active
            defer { KernelChoices.apply(saved) }
            var choices = saved
            choices.packedTraining = true
            KernelChoices.apply(choices)
            let c = try Self.miniLMCase("grad-minilm-seqcls") { bert in
                bert.trainingDropout = (0.1, 0.1)
                bert.multipliesPadding = multipliesPadding
                bert.updateEveryLinear { for u in $0.updates { (u as? LoRAUpdate)?.dropout = 0.1 } }
                if products != .blas { bert.packForTraining(bf16: products == .bf16) }
            }
            XCTAssertGreaterThan(Set(c.ids.map(\.count)).count, 1, "the batch must have padding")
            var rng = SeededRNG(seed: 5)
            return try withUnsafeMutablePointer(to: &rng) { r in
                let (logits, tape) = try c.clf.forwardTraining(c.ids, rng: r)
                let (sum, count, dl) = Loss.crossEntropy(logits, classes: c.clf.head.outFeatures, targets: c.labels)
                c.clf.backward(dl, tape: tape)
                return (sum / Double(count), c.grads.mapValues(\.array))
            }
        }
        for products in [Products.packedF32, .bf16, .blas] {
            let (skipLoss, skipGrads) = try run(products, multipliesPadding: false)
            let (fullLoss, fullGrads) = try run(products, multipliesPadding: true)
            XCTAssertEqual(Set(skipGrads.keys), Set(fullGrads.keys))
            if products == .blas {
                XCTAssertEqual(skipLoss, fullLoss, accuracy: 1e-6 * fullLoss)
            } else {
                XCTAssertEqual(skipLoss, fullLoss, "\(products)")
            }
            for (name, g) in fullGrads {
                let other = skipGrads[name] ?? []
                XCTAssertTrue(g.contains { $0 != 0 }, "\(name) has no gradient: the test would prove nothing")
                if products == .blas {
                    var num = 0.0, den = 0.0
                    for (a, b) in zip(g, other) { num += Double(a - b) * Double(a - b); den += Double(a) * Double(a) }
                    XCTAssertLessThan((num / den).squareRoot(), 1e-4, name)
                } else {
                    let differing = zip(g, other).filter { $0 != $1 }.count
                    XCTAssertEqual(differing, 0, "\(products) \(name): \(differing) of \(g.count) entries differ")
                }
            }
        }
    }
}

/// Full fine-tuning (`graft train --method full`): the base weights' own gradients against plain PyTorch
/// (fixtures from scripts/reference/make-full-grad-reference.py; no PEFT involved).
extension GradientReferenceTests {
    /// The named weights (and biases) of `model` made trainable, their gradient buffers by the fixture's
    /// names (`prefix` + module path + `.weight`).
    static func trainWeights<M: AdaptableModel>(_ model: inout M, _ names: [String], prefix: String) -> [String: FloatBuffer] {
        var grads: [String: FloatBuffer] = [:]
        for name in names where name.hasPrefix(prefix) {
            let module = String(name.dropFirst(prefix.count).dropLast(name.hasSuffix(".bias") ? 5 : 7))
            guard model.linear(module)?.gradients == nil else { continue }
            _ = model.updateLinear(module) { $0.trainWeights() }
            let g = model.linear(module)!.gradients!
            grads[prefix + module + ".weight"] = g.weight
            if let b = g.bias, names.contains(prefix + module + ".bias") { grads[prefix + module + ".bias"] = b }
        }
        return grads
    }

    /// Query of layer 0 and value of layer 5 (weights and biases) and the head of MiniLM's classifier.
    func testMiniLMFullFineTuningGradientsMatchPyTorch() throws {
        let dir = referenceRoot + "/models/grad-minilm-full"
        let expected = try fixtureJSON("models/grad-minilm-full/expected.json")
        let names = expected["trainable"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let folder = try fetchedModel("minilm")
        var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        var grads = Self.trainWeights(&bert, names, prefix: "bert.")
        XCTAssertEqual(grads.count, 4)
        let h = try SafetensorsFile(path: dir + "/head.safetensors")
        let w = try h.tensor("classifier.weight")
        var head = Linear(weight: FloatBuffer(w), bias: FloatBuffer(try h.tensor("classifier.bias")), inFeatures: w.shape[1], outFeatures: w.shape[0])
        head.trainWeights()
        grads["classifier.weight"] = head.gradients!.weight; grads["classifier.bias"] = head.gradients!.bias
        let clf = try BertForSequenceClassification(encoder: bert, tokenizer: try TokenizerLoader.load(path: folder + "/tokenizer.json"), head: head)
        let batch = try fixtureJSON("models/grad-minilm-full/batch.json")
        let ids = Self.unpadded(batch)
        let (logits, tape) = try clf.forwardTraining(ids, rng: nil)
        let (sum, count, dLogits) = Loss.crossEntropy(logits, classes: head.outFeatures, targets: ints(batch["labels"]))
        let want = expected["loss"]?.doubleValue ?? .nan
        XCTAssertEqual(sum / Double(count), want, accuracy: 1e-5 * abs(want))
        clf.backward(dLogits, tape: tape)
        try Self.compare(grads, reference: dir + "/grads.safetensors")
    }

    /// q_proj and v_proj of layer 29 and k_proj of layer 28 of SmolLM2 (the gradient crosses layer 29 to reach it).
    func testSmolLM2FullFineTuningGradientsMatchPyTorch() throws {
        let dir = referenceRoot + "/models/grad-smollm2-full"
        let expected = try fixtureJSON("models/grad-smollm2-full/expected.json")
        var lm = try CausalLM(path: try fetchedSmolLM2GGUF())
        let grads = Self.trainWeights(&lm.model, expected["trainable"]?.arrayValue?.compactMap(\.stringValue) ?? [], prefix: "")
        XCTAssertEqual(grads.count, 3)
        let (ids, targets) = try Self.causalLMBatch("grad-smollm2-full")
        let (sum, count) = try lm.model.causalLMLoss(ids, targets: targets, rng: nil)
        let want = expected["loss"]?.doubleValue ?? .nan
        XCTAssertEqual(sum / Double(count), want, accuracy: 1e-5 * abs(want))
        try Self.compare(grads, reference: dir + "/grads.safetensors")
    }
}
