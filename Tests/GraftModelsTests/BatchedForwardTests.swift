import Foundation
import GraftAdapters
import GraftFormats
@testable import GraftModels
import GraftTensor
import XCTest
import GraftTestSupport

/// `LlamaModel.forward(batch:)`, the pass `graft serve` batches requests with: each sequence's logits
/// equal those of the model with its adapter attached, run alone — whatever else shares the batch.
final class BatchedForwardTests: XCTestCase {
    static let lm: Result<CausalLM, Error> = Result { try CausalLM(gguf: try fetchedSmolLM2GGUF()) }

    func adapter(_ fixture: String) throws -> any LoadedAdapter {
        try AdapterMethods.open(referenceRoot + "/models/" + fixture)
    }

    /// The largest |a − b| over two logit rows, relative to the largest |b|.
    func relativeDifference(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max()! / max(b.map(abs).max()!, 1e-6)
    }

    func testMixedAdapterBatchEqualsEachSequenceAlone() throws {
        let lm = try Self.lm.get()
        let lora = try adapter("peft-smollm2-lora"), ia3 = try adapter("grad-smollm2-ia3"), vera = try adapter("grad-smollm2-vera")
        func mix(_ a: (any LoadedAdapter)?, _ scale: Float = 1) throws -> AdapterMix {
            guard let a else { return .none }
            return AdapterMix([AdapterMix.Part(name: a.path, updates: try lm.model.fitted(a.layerUpdates(dropout: 0), source: a.path), scale: scale)])
        }
        func alone(_ a: (any LoadedAdapter)?) throws -> LlamaModel {
            var m = lm.model
            if let a { try m.attach(a.layerUpdates(dropout: 0), source: a.path) }
            return m
        }
        let prompts = ["The capital of France is", "Once upon a time, in a land far away,", "def fibonacci(n):", "Bonjour"]
            .map { lm.tokenizer.encode($0, addSpecialTokens: true) }
        let adapters: [(any LoadedAdapter)?] = [lora, nil, ia3, vera]
        // Alone: each prompt on the model with its adapter attached, then 4 greedy decode steps.
        var expected: [[[Float]]] = []
        var steps: [[Int]] = []
        for (p, a) in zip(prompts, adapters) {
            let m = try alone(a)
            var cache = m.makeCache()
            var logits = try m.forward(p, cache: &cache)[0]
            var rows = [logits], ids: [Int] = []
            for _ in 0..<4 {
                let id = logits.indices.max { logits[$0] < logits[$1] }!
                ids.append(id)
                logits = try m.forward([id], cache: &cache)[0]
                rows.append(logits)
            }
            expected.append(rows); steps.append(ids)
        }
        // Together: the first two prefill in one pass, the others join one step later (continuous batching).
        var batch = [LlamaModel.BatchSequence(tokens: prompts[0], cache: lm.model.makeCache(), adapters: try mix(lora)),
                     LlamaModel.BatchSequence(tokens: prompts[1], cache: lm.model.makeCache())]
        var got = try lm.model.forward(batch: &batch).map { [$0[0]] }
        batch[0].tokens = [steps[0][0]]; batch[1].tokens = [steps[1][0]]
        batch.append(LlamaModel.BatchSequence(tokens: prompts[2], cache: lm.model.makeCache(), adapters: try mix(ia3)))
        batch.append(LlamaModel.BatchSequence(tokens: prompts[3], cache: lm.model.makeCache(), adapters: try mix(vera)))
        got += [[], []]
        for step in 0..<4 {
            let out = try lm.model.forward(batch: &batch)
            for s in batch.indices { got[s].append(out[s][0]) }
            for s in batch.indices {
                let n = got[s].count - 1  // decode steps this sequence has taken
                if n < steps[s].count { batch[s].tokens = [steps[s][n]] }
            }
            _ = step
        }
        for s in 0..<4 {
            for (k, row) in got[s].enumerated() where k < expected[s].count {
                XCTAssertLessThan(relativeDifference(row, expected[s][k]), 1e-4, "sequence \(s), position \(k)")
            }
        }
        // The adapters do change the logits (else the comparison proves nothing).
        var cache = lm.model.makeCache()
        XCTAssertGreaterThan(relativeDifference(expected[0][0], try lm.model.forward(prompts[0], cache: &cache)[0]), 1e-3)
    }
}


extension BatchedForwardTests {
    /// Composed adapters (`"adapters": [{"name", "scale"}]`): y = base + Σ sᵢ·(Uᵢ(x) − base), checked on
    /// one layer against each adapter attached alone, and on rows beside the group left as the base.
    func testWeightedCompositionOnALayer() throws {
        let lm = try Self.lm.get()
        let lora = try adapter("peft-smollm2-lora"), vera = try adapter("grad-smollm2-vera")
        let module = "model.layers.3.self_attn.v_proj"
        let base = try XCTUnwrap(lm.model.linear(module))
        func attached(_ a: any LoadedAdapter) throws -> Linear {
            var l = base
            try l.attach(try XCTUnwrap(a.layerUpdates(dropout: 0).first { $0.module.hasSuffix(module) }).update, module: module, source: a.path)
            return l
        }
        var rng = SeededRNG(seed: 7)
        let rows = 5, x = FloatBuffer((0..<(rows * base.inFeatures)).map { _ in rng.nextUnitFloat() * 2 - 1 })
        let l = try attached(lora).forward(x, rows: rows).array, v = try attached(vera).forward(x, rows: rows).array
        let b = base.forward(x, rows: rows).array
        let u1 = try XCTUnwrap(lm.model.fitted(lora.layerUpdates(dropout: 0), source: "lora")[module])
        let u2 = try XCTUnwrap(lm.model.fitted(vera.layerUpdates(dropout: 0), source: "vera")[module])
        let got = base.forward(x, rows: rows, groups: [RowGroup(rows: 1..<4, updates: [(u1, 0.25), (u2, 0.75)])]).array
        let n = base.outFeatures
        for r in 0..<rows {
            for j in 0..<n {
                let i = r * n + j
                let want = (1..<4).contains(r) ? b[i] + 0.25 * (l[i] - b[i]) + 0.75 * (v[i] - b[i]) : b[i]
                XCTAssertEqual(got[i], want, accuracy: 1e-4 * max(1, abs(want)), "row \(r), column \(j)")
            }
        }
        XCTAssertGreaterThan(zip(l, b).map { abs($0 - $1) }.max()!, 1e-3)
        XCTAssertGreaterThan(zip(v, b).map { abs($0 - $1) }.max()!, 1e-3)
    }
}
