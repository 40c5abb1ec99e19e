import Foundation
import GraftAdapters
import GraftFormats
import GraftTensor
@testable import GraftMerging
import XCTest
import GraftTestSupport

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

    /// Merging LoRA adapters on one base (`base+adapter`) gives what merging the dense fine-tunes gives:
    /// the tensors no adapter touches come out as the base (the executor skips the method there), the
    /// targeted ones through the method — checked for TSV-M (an SVD per matrix) and TIES.
    func testLoRAInputsMergeLikeTheirDenseModels() throws {
        let tmp = try temporaryDirectory(self)
        let models = referenceRoot + "/merge/models"
        let base = try Checkpoint(path: models + "/base")
        let targets = ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight"]
        var dense: [String] = []
        for k in 0..<2 {
            let adapter = tmp + "/lora\(k)", r = 4
            try FileManager.default.createDirectory(atPath: adapter, withIntermediateDirectories: true)
            try #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}"#
                .write(toFile: adapter + "/adapter_config.json", atomically: true, encoding: .utf8)
            var rng = SeededRNG(seed: UInt64(10 + k))
            var loraTensors: [(String, Tensor)] = []
            var weights: [String: [Float]] = [:]
            for t in targets {
                let shape = base.info(t)!.shape
                let a = (0..<(r * shape[1])).map { _ in rng.nextUnitFloat() - 0.5 }, b = (0..<(shape[0] * r)).map { _ in rng.nextUnitFloat() - 0.5 }
                loraTensors += [("base_model.model.\(t.dropLast(7)).lora_A.weight", Tensor(shape: [r, shape[1]], values: a)),
                                ("base_model.model.\(t.dropLast(7)).lora_B.weight", Tensor(shape: [shape[0], r], values: b))]
                let delta = Linalg.matmul(b, a, m: shape[0], k: r, n: shape[1])
                weights[t] = zip(try base.tensor(t).floats(), delta).map { $0 + 2 * $1 }
            }
            try ShardedSafetensorsWriter.writeFile(adapter + "/adapter_model.safetensors", loraTensors)
            // The same fine-tune written out densely (another file, so the executor cannot skip anything).
            let d = tmp + "/dense\(k)"
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: models + "/base/config.json", toPath: d + "/config.json")
            try ShardedSafetensorsWriter.writeFile(d + "/model.safetensors", try base.names.map { n -> (String, Tensor) in
                if let w = weights[n] { return (n, Tensor(shape: base.info(n)!.shape, values: w)) }
                return (n, try base.tensor(n))
            })
            dense.append(d)
        }
        for (method, params) in [("tsv", "parameters: {alpha: 0.7}"), ("ties", "parameters: {lambda: 1.2}")] {
            let per = method == "ties" ? "\n  parameters: {weight: 1.0, density: 0.3}" : ""
            func config(_ inputs: [String]) -> String {
                "merge_method: \(method)\nbase_model: \(models)/base\n\(params)\nmodels:\n" + inputs.map { "- model: \($0)\(per)\n" }.joined()
            }
            FileManager.default.createFile(atPath: tmp + "/lora.yml", contents: Data(config((0..<2).map { "\(models)/base+\(tmp)/lora\($0)" }).utf8))
            FileManager.default.createFile(atPath: tmp + "/dense.yml", contents: Data(config(dense).utf8))
            try merge(config: tmp + "/lora.yml", workDir: tmp, out: tmp + "/\(method)-lora")
            try merge(config: tmp + "/dense.yml", workDir: tmp, out: tmp + "/\(method)-dense")
            let (d, n) = try maxAbsDiff(try Checkpoint(path: tmp + "/\(method)-lora"), try Checkpoint(path: tmp + "/\(method)-dense"))
            XCTAssertLessThanOrEqual(d, 1e-5, "\(method): max |diff| \(d) at \(n)")
            let untouched = try Checkpoint(path: tmp + "/\(method)-lora").tensor("lm_head.weight").floats()
            XCTAssertEqual(untouched, try base.tensor("lm_head.weight").floats(), "\(method): untouched tensors are the base's")
            let q = try Checkpoint(path: tmp + "/\(method)-lora").tensor(targets[0]).floats()
            XCTAssertNotEqual(q, try base.tensor(targets[0]).floats(), "\(method): targeted tensors are merged")
        }
    }
}
