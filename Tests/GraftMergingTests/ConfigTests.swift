import Foundation
import GraftAdapters
import GraftFormats
import GraftTensor
@testable import GraftMerging
import XCTest

final class ConfigTests: XCTestCase {
    func testGradientsInterpolateAndFiltersMatchSubstrings() throws {
        let g = ParameterSetting.gradient([.number(0), .number(1), .number(0.5)])
        XCTAssertEqual(g.evaluate(tensor: "x", t: 0), .number(0))
        XCTAssertEqual(g.evaluate(tensor: "x", t: 0.25), .number(0.5))
        XCTAssertEqual(g.evaluate(tensor: "x", t: 0.75), .number(0.75))
        XCTAssertEqual(g.evaluate(tensor: "x", t: 1), .number(0.5))
        let f = try ParameterSetting.parse([["filter": "mlp", "value": 0.3], ["value": [1.0, 2.0]]] as [Any], path: "p")
        XCTAssertEqual(f.evaluate(tensor: "model.layers.3.mlp.up_proj.weight", t: 1), .number(0.3))
        XCTAssertEqual(f.evaluate(tensor: "model.layers.3.self_attn.q_proj.weight", t: 1), .number(2))
        let none = try ParameterSetting.parse([["filter": "mlp", "value": 0.3]] as [Any], path: "p")
        XCTAssertNil(none.evaluate(tensor: "attn", t: 0))
    }

    func testLayerPositionFollowsMergekit() {
        let names = (0..<5).map { "model.layers.\($0).mlp.up_proj.weight" } + ["model.embed_tokens.weight", "lm_head.weight"]
        let lp = LayerPosition(names: names, config: nil)
        XCTAssertEqual(lp.t(for: "model.layers.0.mlp.up_proj.weight"), 0)
        XCTAssertEqual(lp.t(for: "model.layers.2.mlp.up_proj.weight"), 0.5)
        XCTAssertEqual(lp.t(for: "model.layers.4.mlp.up_proj.weight"), 1)
        XCTAssertEqual(lp.t(for: "lm_head.weight"), 0)
        XCTAssertEqual(LayerPosition.layerIndex("encoder.layer.11.attention.self.query.weight"), 11)
    }

    func testRelativePathsResolveAgainstWorkingDirectoryThenConfigFolder() throws {
        let tmp = try temporaryDirectory(self)
        try FileManager.default.createDirectory(atPath: tmp + "/cfg/models/m", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: tmp + "/work/models/m", withIntermediateDirectories: true)
        let fromWork = try inDirectory(tmp + "/work") { try MergeConfig.resolveModel("models/m", field: "f", configDirectory: tmp + "/cfg") }
        XCTAssertEqual(fromWork.path, URL(fileURLWithPath: tmp + "/work/models/m").standardizedFileURL.path)
        let fromCfg = try inDirectory(tmp) { try MergeConfig.resolveModel("models/m", field: "f", configDirectory: tmp + "/cfg") }
        XCTAssertEqual(fromCfg.path, URL(fileURLWithPath: tmp + "/cfg/models/m").standardizedFileURL.path)
    }

    /// `model+adapter`: the LoRA update W + (α/r)·B·A is applied before merging.
    func testModelPlusAdapterAppliesLoRAFirst() throws {
        let tmp = try temporaryDirectory(self)
        let models = referenceRoot + "/merge/models"
        let target = "model.layers.0.self_attn.q_proj.weight"
        let base = try Checkpoint(path: models + "/task1")
        let shape = base.info(target)!.shape  // [64, 64]
        let r = 4
        var rng = SeededRNG(seed: 1)
        let a = (0..<(r * shape[1])).map { _ in rng.nextUnitFloat() - 0.5 }
        let b = (0..<(shape[0] * r)).map { _ in rng.nextUnitFloat() - 0.5 }
        let adapter = tmp + "/lora"
        try FileManager.default.createDirectory(atPath: adapter, withIntermediateDirectories: true)
        try #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}"#
            .write(toFile: adapter + "/adapter_config.json", atomically: true, encoding: .utf8)
        try ShardedSafetensorsWriter.writeFile(adapter + "/adapter_model.safetensors", [
            ("base_model.model.\(target.dropLast(7)).lora_A.weight", Tensor(shape: [r, shape[1]], values: a)),
            ("base_model.model.\(target.dropLast(7)).lora_B.weight", Tensor(shape: [shape[0], r], values: b)),
        ])
        let yaml = "merge_method: task_arithmetic\nbase_model: \(models)/base\nmodels:\n- model: \(models)/task1+\(adapter)\n  parameters:\n    weight: 1.0\n"
        FileManager.default.createFile(atPath: tmp + "/c.yml", contents: Data(yaml.utf8))
        try merge(config: tmp + "/c.yml", workDir: tmp, out: tmp + "/out")
        let out = try Checkpoint(path: tmp + "/out")
        let w = try base.tensor(target).floats(), merged = try out.tensor(target).floats()
        let delta = Linalg.matmul(b, a, m: shape[0], k: r, n: shape[1])
        for i in w.indices { XCTAssertEqual(merged[i], w[i] + 2 * delta[i], accuracy: 1e-5) }
        // Other tensors: task arithmetic with weight 1 reproduces task1.
        let head = try out.tensor("lm_head.weight").floats(), want = try base.tensor("lm_head.weight").floats()
        XCTAssertLessThanOrEqual(zip(head, want).map { abs($0 - $1) }.max()!, 1e-6)
    }

    /// Planning resolves every parameter for every tensor up front (what --dry-run checks).
    func testPlanResolvesPerTensorParameters() throws {
        let root = referenceRoot + "/merge"
        let plan = try inDirectory(root) { try MergePlan(config: try MergeConfig.load(path: "configs/ties_gradient.yml")) }
        XCTAssertEqual(plan.items.count, 21)
        XCTAssertEqual(plan.inputs.count, 3)
        let mlp1 = try XCTUnwrap(plan.items.first { $0.name == "model.layers.1.mlp.up_proj.weight" })
        XCTAssertEqual(mlp1.perModel[0]["density"], .number(0.5))   // filter: mlp
        XCTAssertEqual(mlp1.perModel[0]["weight"], .number(1.0))    // gradient [0.2, 1.0] at t = 1
        let attn0 = try XCTUnwrap(plan.items.first { $0.name == "model.layers.0.self_attn.q_proj.weight" })
        XCTAssertEqual(attn0.perModel[0]["density"], .number(0.25))
        XCTAssertEqual(attn0.perModel[0]["weight"], .number(0.2))
        XCTAssertEqual(attn0.perModel[2]["weight"], .number(1.0))   // [1.0, 0.5, 0.1] at t = 0
        XCTAssertEqual(attn0.globals?["lambda"], .number(0.9))
    }
}
