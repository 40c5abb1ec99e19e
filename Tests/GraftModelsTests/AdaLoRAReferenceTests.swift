import Foundation
@testable import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor
import GraftText
import XCTest
import GraftTestSupport

/// AdaLoRA's rank allocation and saved folders against PEFT 0.21 (fixtures made by
/// scripts/reference/make-adalora-reference.py).
final class AdaLoRAReferenceTests: XCTestCase {
    static func tensors(_ path: String) throws -> [String: [Float]] {
        let f = try SafetensorsFile(path: path)
        return Dictionary(uniqueKeysWithValues: try f.tensors.map { ($0.name, FloatBuffer(try f.tensor($0.name)).array) })
    }

    static func assertClose(_ a: [Float], _ b: [Float], _ tolerance: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        for (x, y) in zip(a, b) where abs(x - y) > tolerance * max(1, abs(y)) {
            XCTFail("\(what): \(x) vs \(y)", file: file, line: line); return
        }
    }

    /// PEFT's RankAllocator step by step on three modules (init_r 4 → target_r 2, tinit 2, tfinal 3,
    /// deltaT 2, 12 steps): each step's parameter values and gradients set as PEFT's were, then the
    /// budget, the smoothed sensitivities and uncertainties, every E after masking, and the rank
    /// pattern equal PEFT's — through the warm-up, the cubic schedule, the forced final allocation and
    /// the fixed pattern after it.
    func testRankAllocatorMatchesPEFTStepByStep() throws {
        let dir = referenceRoot + "/models/adalora-allocation"
        let expected = try fixtureJSON("models/adalora-allocation/expected.json")
        let inputs = try Self.tensors(dir + "/inputs.safetensors"), outputs = try Self.tensors(dir + "/outputs.safetensors")
        var config = AdaLoRAConfig(targets: ModuleTargets(names: ["lin0", "lin1", "lin2"]))
        config.initRank = 4; config.targetRank = 2; config.tinit = 2; config.tfinal = 3; config.deltaT = 2
        let shapes = [("lin0", 8, 6), ("lin1", 10, 4), ("lin2", 5, 7)]
        let modules: [TrainedModule] = try shapes.map { name, inF, outF in
            let u = try config.makeUpdate(module: name, weight: FloatBuffer(count: inF * outF), inFeatures: inF, outFeatures: outF, seed: 0)
            u.makeTrainable()
            return (name, u)
        }
        let allocator = try XCTUnwrap(try config.makeTrainingHook(modules: modules, totalSteps: 12, seed: 0) as? RankAllocator)
        XCTAssertEqual(allocator.initialBudget, expected["init_bgt"]?.intValue.map(Int.init))
        XCTAssertEqual(allocator.targetBudget, expected["target_bgt"]?.intValue.map(Int.init))
        let steps = try XCTUnwrap(expected["steps"]?.arrayValue)
        XCTAssertEqual(steps.count, 12)
        var emasCompared = 0
        for s in steps {
            let t = Int(s["step"]?.intValue ?? -1)
            let (budget, mask) = allocator.budget(at: t)
            XCTAssertEqual(budget, s["budget"]?.intValue.map(Int.init), "step \(t) budget")
            XCTAssertEqual(mask, s["mask_ind"]?.boolValue, "step \(t) mask")
            for (name, u) in modules {
                for p in u.parameters {
                    let key = "step\(t).\(name).\(p.suffix).default"
                    let value = try XCTUnwrap(inputs[key + ".value"], key), grad = try XCTUnwrap(inputs[key + ".grad"], key)
                    p.value.mutable.update(from: value)
                    p.gradient!.mutable.update(from: grad)
                }
            }
            allocator.afterOptimizerStep(t)
            for (i, m) in allocator.modules.enumerated() {
                Self.assertClose(m.update.e.array, try XCTUnwrap(outputs["step\(t).\(m.path).lora_E.default"]), 1e-6, "step \(t) \(m.path) E")
                for (k, suffix) in ["lora_A", "lora_B", "lora_E"].enumerated() {
                    let key = "step\(t).\(m.path).\(suffix).default"
                    if let ipt = outputs[key + ".exp_avg_ipt"], let unc = outputs[key + ".exp_avg_unc"] {
                        Self.assertClose(allocator.modules[i].sensitivity[k].array, ipt, 1e-5, key + " sensitivity")
                        Self.assertClose(allocator.modules[i].uncertainty[k].array, unc, 1e-5, key + " uncertainty")
                        emasCompared += 1
                    }
                }
            }
            if let pattern = s["config_rank_pattern"]?.objectValue {
                let ours = try XCTUnwrap(allocator.rankPattern, "step \(t): PEFT has a rank pattern")
                for (m, keep) in zip(allocator.modules, ours) {
                    let want = pattern.first { $0.0 == m.path + ".lora_E.default" }?.1.arrayValue?.compactMap(\.boolValue)
                    XCTAssertEqual(keep, want, "step \(t) \(m.path) rank pattern")
                }
            } else {
                XCTAssertNil(allocator.rankPattern, "step \(t): no allocation yet")
            }
        }
        // Steps 0–8 update the EMAs (9 steps × 3 modules × A, B, E); the fixture names must have matched.
        XCTAssertEqual(emasCompared, 81, "sensitivities compared")
    }

    /// The fixture's MiniLM AdaLoRA adapter with PEFT's gradients of its batch: one importance update,
    /// then the forced final allocation (24 of 72 ranks) — the saved folder equals PEFT's save_pretrained:
    /// the same rank_pattern (keys and values) and the same tensors cut to the kept ranks.
    func testSavedAdapterMatchesPEFTAfterAllocation() throws {
        let grads = try Self.tensors(referenceRoot + "/models/grad-minilm-adalora/grads.safetensors")
        let adapter = try AdapterMethods.open(referenceRoot + "/models/grad-minilm-adalora")
        let config = try XCTUnwrap(try adapter.recipe(dropout: 0) as? AdaLoRAConfig)
        XCTAssertEqual([config.initRank, config.targetRank], [6, 2])
        var modules: [TrainedModule] = []
        var tensors: [(String, Tensor)] = []
        for (name, u) in adapter.layerUpdates(dropout: 0) {
            u.makeTrainable()
            for p in u.parameters {
                let full = LoRAAdapter.prefix + name + "." + p.suffix
                p.gradient!.mutable.update(from: try XCTUnwrap(grads[full], full))
                tensors.append((full, p.value.tensor(shape: p.shape)))
            }
            modules.append((name, u))
        }
        let allocator = try XCTUnwrap(try config.makeTrainingHook(modules: modules, totalSteps: 10, seed: 0) as? RankAllocator)
        allocator.afterOptimizerStep(0)
        allocator.afterOptimizerStep(10)
        let (json, saved) = try allocator.savedAdapter(config: config.peftConfig(taskType: "SEQ_CLS", baseModel: "", modulesToSave: []),
                                                       tensors: tensors, final: true)
        let peftDir = referenceRoot + "/models/peft-adalora-saved"
        let peftConfig = try fixtureJSON("models/peft-adalora-saved/adapter_config.json")
        let want = Dictionary(uniqueKeysWithValues: (peftConfig["rank_pattern"]?.objectValue ?? []).map { ($0.0, $0.1.arrayValue?.compactMap(\.boolValue) ?? []) })
        let ours = Dictionary(uniqueKeysWithValues: (json["rank_pattern"]?.objectValue ?? []).map { ($0.0, $0.1.arrayValue?.compactMap(\.boolValue) ?? []) })
        XCTAssertEqual(want.count, 12)
        XCTAssertEqual(ours, want)
        XCTAssertEqual(json["total_step"], .int(10))
        let peftTensors = try Self.tensors(peftDir + "/adapter_model.safetensors")
        for (name, t) in saved {
            let ref = try XCTUnwrap(peftTensors[name], name)
            XCTAssertEqual(FloatBuffer(t).array, ref, name)
        }
    }

    /// PEFT's saved AdaLoRA folder (ranks 1–5 per module after allocation, tensors cut) read by Graft:
    /// the logits PEFT gives after reloading it, which keep the scale lora_alpha / init_r.
    func testReadsPEFTsAllocatedAdapter() throws {
        let dir = referenceRoot + "/models/peft-adalora-saved"
        let adapter = try AdapterMethods.open(dir)
        XCTAssertEqual(adapter.method, "adalora")
        let folder = try fetchedModel("minilm")
        var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        try bert.attach(adapter.layerUpdates(dropout: 0), source: dir)
        let (w, b) = try XCTUnwrap(try adapter.classificationHead())
        let head = Linear(weight: FloatBuffer(w), bias: b.map { FloatBuffer($0) }, inFeatures: w.shape[1], outFeatures: w.shape[0])
        let clf = try BertForSequenceClassification(encoder: bert, tokenizer: try TokenizerLoader.load(path: folder + "/tokenizer.json"), head: head)
        let logits = try clf.logits(ids: GradientReferenceTests.unpadded(try fixtureJSON("models/peft-adalora-saved/batch.json")))
        let want = try fixtureJSON("models/peft-adalora-saved/expected.json")["logits_reloaded"]?.arrayValue ?? []
        XCTAssertEqual(want.count, 3)
        for (row, ref) in zip(logits, want) { Self.assertClose(row, ref.arrayValue?.compactMap(\.doubleValue).map(Float.init) ?? [], 1e-5, "logits") }
    }
}
