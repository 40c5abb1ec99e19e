import Foundation
import GraftAdapters
import GraftFormats
@testable import GraftModels
import GraftTensor
import XCTest
import GraftTestSupport

/// Arrow routing among three LoRA adapters on SmolLM2 against PEFT 0.21's `create_arrow_model`
/// (top_k 2, temperature 1; fixture models/arrow-smollm2 from scripts/reference/make-arrow-reference.py).
final class ArrowReferenceTests: XCTestCase {
    func testArrowRoutedLogitsEqualPEFT() throws {
        let lm = try CausalLM(gguf: try fetchedSmolLM2GGUF())
        let root = referenceRoot + "/models/arrow-smollm2"
        let expected = try fixtureJSON("models/arrow-smollm2/expected.json")
        let ids = ints(expected["input_ids"])
        let want = try Checkpoint(path: root + "/expected.safetensors").tensor("logits").floats()
        let experts = try (0..<3).map { e -> (name: String, updates: [String: any LayerUpdate]) in
            let a = try AdapterMethods.open(root + "/expert\(e)")
            return ("expert\(e)", try lm.model.fitted(a.layerUpdates(dropout: 0), source: a.path))
        }
        var settings = ArrowSettings()
        settings.topK = 2
        func logits(_ updates: [String: any LayerUpdate]) throws -> [[Float]] {
            var m = lm.model
            try m.attach(updates.map { ($0.key, $0.value) }, source: "arrow")
            var cache = m.makeCache()
            return try m.forward(ids, cache: &cache, allLogits: true)
        }
        let got = try logits(try ArrowRouting.updates(experts: experts, settings: settings))
        let v = lm.model.config.vocab
        XCTAssertEqual(want.count, ids.count * v)
        for (p, row) in got.enumerated() {
            let w = Array(want[(p * v)..<((p + 1) * v)])
            XCTAssertLessThanOrEqual(zip(row, w).map { abs($0 - $1) }.max()!, 1e-3, "position \(p)")
        }
        // Routing matters: one expert alone, or all three at once (top-k 3), gives other logits.
        let alone = try logits(experts[0].updates)
        settings.topK = 3
        let all = try logits(try ArrowRouting.updates(experts: experts, settings: settings))
        for other in [alone, all] {
            let d = zip(other.last!, got.last!).map { abs($0 - $1) }.max()!
            XCTAssertGreaterThan(d, 1e-2)
        }
    }

    func testArrowRefusesWhatPEFTRefuses() throws {
        let lm = try CausalLM(gguf: try fetchedSmolLM2GGUF())
        let root = referenceRoot + "/models/arrow-smollm2"
        let lora = try lm.model.fitted(AdapterMethods.open(root + "/expert0").layerUpdates(dropout: 0), source: "e0")
        let ia3 = try lm.model.fitted(AdapterMethods.open(referenceRoot + "/models/grad-smollm2-ia3").layerUpdates(dropout: 0), source: "ia3")
        XCTAssertThrowsError(try ArrowRouting.updates(experts: [("e0", lora)], settings: ArrowSettings())) {
            XCTAssertTrue("\($0)".contains("at least two"), "\($0)")
        }
        XCTAssertThrowsError(try ArrowRouting.updates(experts: [("e0", lora), ("ia3", ia3)], settings: ArrowSettings())) {
            XCTAssertTrue("\($0)".contains("same modules") || "\($0)".contains("plain LoRA"), "\($0)")
        }
    }
}
