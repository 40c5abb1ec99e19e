import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor
import GraftTestSupport
import XCTest

/// PHATGOOSE against a PyTorch port of its reference code (r-three/phatgoose; fixture made by
/// scripts/reference/make-phatgoose-reference.py): routed logits over three gated LoRA adapters on SmolLM2
/// (the Arrow fixture's adapters, with the gates of models/phatgoose-smollm2/expertN), and the gate
/// gradients of training one adapter's gates.
final class PhatgooseReferenceTests: XCTestCase {
    static let fixture = "phatgoose-smollm2"
    var dir: String { referenceRoot + "/models/" + Self.fixture }

    /// The Arrow fixture's LoRA adapter `e` and its gates from this fixture.
    func expert(_ e: Int) throws -> (adapter: any LoadedAdapter, gates: [String: FloatBuffer]) {
        (try AdapterMethods.open(referenceRoot + "/models/arrow-smollm2/expert\(e)"), try XCTUnwrap(try PhatgooseGates.read(adapter: dir + "/expert\(e)")))
    }

    func testRoutedLogitsEqualTheReference() throws {
        var lm = try CausalLM(path: try fetchedSmolLM2GGUF())
        let experts = try (0..<3).map { e -> (name: String, updates: [String: any LayerUpdate], gates: [String: FloatBuffer]) in
            let (a, gates) = try expert(e)
            return ("expert\(e)", try lm.model.fitted(a.layerUpdates(dropout: 0), source: a.path), gates)
        }
        XCTAssertEqual(experts[0].gates.count, 60)  // q_proj and v_proj of 30 layers
        let routed = try PhatgooseRouting.updates(experts: experts, settings: PhatgooseSettings())
        try lm.model.attach(routed.map { ($0.key, $0.value) }, source: dir)
        let ids = ints(try fixtureJSON("models/\(Self.fixture)/expected.json")["input_ids"])
        var cache = lm.model.makeCache()
        let got = try lm.model.forward(ids, cache: &cache, allLogits: true)
        let want = FloatBuffer(try Checkpoint(path: dir + "/routed.safetensors").tensor("logits")).array
        let vocab = lm.model.config.vocab
        XCTAssertEqual(want.count, ids.count * vocab)
        var worst: Float = 0
        for (t, row) in got.enumerated() { for j in 0..<vocab { worst = max(worst, abs(row[j] - want[t * vocab + j])) } }
        XCTAssertLessThan(worst, 1e-3, "largest logit difference \(worst)")
        // The routing matters: the base alone is far from it.
        let base = try CausalLM(path: try fetchedSmolLM2GGUF())
        var c2 = base.model.makeCache()
        let plain = try base.model.forward(ids, cache: &c2, allLogits: true)
        XCTAssertGreaterThan(zip(plain.last!, got.last!).map { abs($0 - $1) }.max()!, 0.05)
    }

    func testGateGradientsEqualPyTorch() throws {
        var lm = try CausalLM(path: try fetchedSmolLM2GGUF())
        let (a, gates) = try expert(0)
        var grads: [String: FloatBuffer] = [:]
        for (module, u) in try lm.model.fitted(a.layerUpdates(dropout: 0), source: a.path) {
            let g = PhatgooseGate(lora: try XCTUnwrap(u as? LoRAUpdate), gate: FloatBuffer(try XCTUnwrap(gates[module]).array))
            g.makeTrainable()
            try lm.model.attach([(module, g)], source: a.path)
            grads[module + "." + PhatgooseGates.suffix] = try XCTUnwrap(g.parameters.first?.gradient)
        }
        let (ids, targets) = try GradientReferenceTests.causalLMBatch(Self.fixture)
        let (sum, count) = try lm.model.causalLMLoss(ids, targets: targets, rng: nil)
        let loss = try XCTUnwrap(try fixtureJSON("models/\(Self.fixture)/expected.json")["loss"]?.doubleValue)
        XCTAssertEqual(sum / Double(count), loss, accuracy: 1e-5 * loss)
        try GradientReferenceTests.compare(grads, reference: dir + "/gate_grads.safetensors")
    }

    /// A gate's backward against central differences of its own forward, on a small layer (input gradient
    /// included, which the model test reaches only through the loss).
    func testGateBackwardMatchesFiniteDifferences() throws {
        var rng = SeededRNG(seed: 7)
        let (inF, outF, rank, rows) = (6, 5, 2, 3)
        func random(_ n: Int, _ s: Float) -> FloatBuffer { FloatBuffer((0..<n).map { _ in (rng.nextUnitFloat() - 0.5) * s }) }
        let w = random(outF * inF, 1)
        let base = FrozenLinear(weight: w, bias: nil, inFeatures: inF, outFeatures: outF, product: { x, r in
            let y = FloatBuffer(count: r * outF)
            Linalg.gemm(m: r, n: outF, k: inF, a: x.values.baseAddress!, b: w.values.baseAddress!, transB: true, c: y.mutable.baseAddress!)
            return y
        }, inputProduct: { dy, r in
            let dx = FloatBuffer(count: r * inF)
            Linalg.gemm(m: r, n: inF, k: outF, a: dy.values.baseAddress!, b: w.values.baseAddress!, c: dx.mutable.baseAddress!)
            return dx
        })
        let gate = PhatgooseGate(lora: LoRAUpdate(a: random(rank * inF, 2), b: random(outF * rank, 2), rank: rank, scale: 1.5), gate: random(inF, 2))
        gate.makeTrainable()
        let x = random(rows * inF, 2), probe = random(rows * outF, 1)  // loss = Σ probe ⊙ y
        func loss() -> Double {
            let y = gate.forward(x, rows: rows, base: base, rng: nil).y
            return zip(y.array, probe.array).reduce(0) { $0 + Double($1.0 * $1.1) }
        }
        let (_, saved) = gate.forward(x, rows: rows, base: base, rng: nil)
        let dx = try XCTUnwrap(gate.backward(probe, x: x, saved: saved, rows: rows, base: base, needInput: true))
        let dv = try XCTUnwrap(gate.parameters[0].gradient)
        let h: Float = 1e-2
        for (buffer, analytic, name) in [(gate.gate, dv, "gate"), (x, dx, "input")] {
            for i in 0..<buffer.count {
                let v = buffer.mutable[i]
                buffer.mutable[i] = v + h; let up = loss()
                buffer.mutable[i] = v - h; let down = loss()
                buffer.mutable[i] = v
                XCTAssertEqual(analytic.values[i], Float((up - down) / Double(2 * h)), accuracy: 2e-3, "\(name)[\(i)]")
            }
        }
    }
}
