import Foundation
import GraftAdapters
import GraftFormats
import GraftEval
import GraftMerging
import GraftModels
import GraftPipeline
import GraftTensor
import GraftText
import GraftTraining
import XCTest
import GraftTestSupport

/// Adapter methods behind the seam: each trains on both models where it applies, saves PEFT's format
/// (names, shapes, config keys of a PEFT-made fixture), reloads with the outputs it trained, and folds.
final class AdapterMethodTests: XCTestCase {
    func losses(_ h: [JSONValue]) -> [Double] { h.compactMap { $0["loss"]?.doubleValue } }

    static let texts = ["the film was great", "the plot was awful"]

    /// The adapter in `folder` on MiniLM, unfused through the runtime and folded by `graft fuse` into
    /// `folder`.fused: the same logits (to 1e-4). Returns the unfused logits of `texts` and the classifier.
    func assertFoldsLikeUnfused(_ folder: String, file: StaticString = #filePath, line: UInt = #line) throws
        -> (logits: [[Float]], classifier: LoadedClassifier) {
        let model = try fetchedModel("minilm")
        let clf = try Evaluation.classifier(model: model, adapter: folder)
        let unfused = try clf.model.logits(Self.texts)
        _ = try Fuse.run(model: model, adapter: folder, to: folder + ".fused")
        var encoder = try BertModel(checkpoint: try Checkpoint(path: folder + ".fused"))
        encoder.packForInference()
        let fused = try BertForSequenceClassification(encoder: encoder, tokenizer: try TokenizerLoader.load(model: model), head: clf.model.head)
        for (a, b) in zip(unfused.joined(), try fused.logits(Self.texts).joined()) { XCTAssertEqual(a, b, accuracy: 1e-4, file: file, line: line) }
        return (unfused, clf)
    }

    /// (IA)³ on MiniLM classification with PEFT's BERT defaults: it learns, its folder has the tensor
    /// names and shapes and only config keys of PEFT's own (fixture grad-minilm-ia3, same targets), and
    /// reloaded unfused or folded into the weights it gives the same logits.
    func testIA3TrainsSavesAsPEFTAndFolds() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl",
                          adapter: IA3Config.defaults(llama: false), output: d + "/ia3")
        s.trainer.maxSteps = 12; s.trainer.batchSize = 8; s.trainer.learningRate = 2e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")
        XCTAssertEqual(outcome.trainableParameters, 6 * (384 + 384 + 384 + 1536) + 2 * 384 + 2, "IA³ vectors and the head")

        let fixture = referenceRoot + "/models/grad-minilm-ia3"
        let ref = try SafetensorsFile(path: fixture + "/adapter_model.safetensors")
        let ours = try SafetensorsFile(path: d + "/ia3/adapter_model.safetensors")
        // The fixture's head has 3 classes, this data 2: compare the IA³ vectors' names and shapes, and the head's names.
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: ours.tensors.filter { $0.name.hasSuffix("ia3_l") }.map { ($0.name, $0.shape) }),
                       Dictionary(uniqueKeysWithValues: ref.tensors.filter { $0.name.hasSuffix("ia3_l") }.map { ($0.name, $0.shape) }))
        XCTAssertEqual(Set(ours.tensors.map(\.name)), Set(ref.tensors.map(\.name)))
        let refCfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: fixture + "/adapter_config.json"))))
        let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/ia3/adapter_config.json"))))
        let refKeys = Set((refCfg.objectValue ?? []).map(\.0))
        for (k, _) in cfg.objectValue ?? [] { XCTAssertTrue(refKeys.contains(k), "PEFT's IA3Config has no key \(k)") }
        for k in ["peft_type", "task_type", "target_modules", "feedforward_modules"] { XCTAssertEqual(cfg[k], refCfg[k], k) }

        // Reloaded: unfused through the runtime, and folded by graft fuse, the same logits.
        let (unfused, clf) = try assertFoldsLikeUnfused(d + "/ia3")
        let labels = clf.labels
        XCTAssertEqual(labels[unfused[0][0] > unfused[0][1] ? 0 : 1], "positive")
    }

    /// AdaLoRA on MiniLM classification: the rank budget is allocated on its schedule (12 modules from 6
    /// ranks each to 24 ranks in all, differently per module), the folder is PEFT's (rank_pattern keyed as
    /// PEFT keys it, tensors cut to the kept ranks, config keys of PEFT's own), it reloads and folds with
    /// the logits it trained, and a run resumed from a checkpoint mid-schedule ends on the same adapter.
    func testAdaLoRAAllocatesItsRankBudgetSavesAsPEFTAndResumes() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        var c = AdaLoRAConfig(targets: ModuleTargets(names: ["query", "value"]))
        c.initRank = 6; c.targetRank = 2; c.tinit = 2; c.tfinal = 3; c.deltaT = 2
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl", adapter: c, output: d + "/ada")
        s.trainer.maxSteps = 12; s.trainer.batchSize = 8; s.trainer.learningRate = 2e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
        s.trainer.saveEvery = 5
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")

        let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/ada/adapter_config.json"))))
        let pattern = cfg["rank_pattern"]?.objectValue ?? []
        XCTAssertEqual(pattern.count, 12)
        let ranks = pattern.map { $0.1.arrayValue?.filter { $0.boolValue == true }.count ?? -1 }
        XCTAssertEqual(ranks.reduce(0, +), 24, "the final budget: target_r × modules")
        XCTAssertGreaterThan(Set(ranks).count, 1, "the budget moved between modules: \(ranks)")
        XCTAssertTrue(pattern.allSatisfy { $0.0.hasPrefix("bert.encoder.layer.") && $0.0.hasSuffix(".lora_E") && $0.1.arrayValue?.count == 6 })
        XCTAssertEqual(cfg["total_step"], .int(12))
        let refCfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: referenceRoot + "/models/grad-minilm-adalora/adapter_config.json"))))
        let refKeys = Set((refCfg.objectValue ?? []).map(\.0))
        for (k, _) in cfg.objectValue ?? [] { XCTAssertTrue(refKeys.contains(k), "PEFT's AdaLoraConfig has no key \(k)") }
        let file = try SafetensorsFile(path: d + "/ada/adapter_model.safetensors")
        for (key, keep) in pattern {
            let r = keep.arrayValue?.filter { $0.boolValue == true }.count ?? -1
            let module = LoRAAdapter.prefix + key.dropLast("lora_E".count)
            XCTAssertEqual(file.tensors.first { $0.name == module + "lora_A" }?.shape, [r, 384], key)
            XCTAssertEqual(file.tensors.first { $0.name == module + "lora_E" }?.shape, [r, 1], key)
            XCTAssertEqual(file.tensors.first { $0.name == module + "lora_B" }?.shape, [384, r], key)
        }
        _ = try assertFoldsLikeUnfused(d + "/ada")

        // Resumed at step 5 (before the final allocation at step 9): the sensitivities, uncertainties
        // and rank pattern come back with the optimizer, so the run lands on the same adapter.
        let checkpoints = s.checkpointDir
        s.output = d + "/resumed"
        s.resume = checkpoints + "/checkpoint-5"
        let resumed = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        XCTAssertEqual(losses(resumed.history), l)
        let a = try SafetensorsFile(path: d + "/ada/adapter_model.safetensors"), b = try SafetensorsFile(path: d + "/resumed/adapter_model.safetensors")
        XCTAssertEqual(a.tensors.map(\.name), b.tensors.map(\.name))
        for t in a.tensors { XCTAssertEqual(FloatBuffer(try a.tensor(t.name)).array, FloatBuffer(try b.tensor(t.name)).array, t.name) }
        XCTAssertEqual(try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/resumed/adapter_config.json"))))["rank_pattern"], cfg["rank_pattern"])
    }

    /// IncreLoRA on MiniLM classification: from rank 1 per module, ranks grow on the schedule until the
    /// budget (2 per module on average, 24 in all) is spent, unevenly; the folder is a PEFT AdaLoRA folder
    /// (rank_pattern, cut tensors, init_r the largest rank) with graft_method increlora; it reloads and
    /// folds with the logits it trained; a run resumed mid-growth (ranks, reserves, importance and the
    /// optimizer's fresh elements restored) ends on the same adapter.
    func testIncreLoRAGrowsItsRanksSavesAsAdaLoRAAndResumes() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        var c = IncreLoRAConfig(targets: ModuleTargets(names: ["query", "value"]))
        c.initRank = 1; c.targetRank = 2; c.addRank = 1; c.topModules = 3; c.warmup = 1; c.interval = 2
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl", adapter: c, output: d + "/inc")
        s.trainer.maxSteps = 14; s.trainer.batchSize = 8; s.trainer.learningRate = 2e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
        s.trainer.warmupSteps = 2; s.trainer.saveEvery = 5
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")

        let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/inc/adapter_config.json"))))
        XCTAssertEqual(cfg["peft_type"], .string("ADALORA"))
        XCTAssertEqual(cfg["graft_method"], .string("increlora"))
        let pattern = cfg["rank_pattern"]?.objectValue ?? []
        let ranks = pattern.map { $0.1.arrayValue?.filter { $0.boolValue == true }.count ?? -1 }
        XCTAssertEqual(pattern.count, 12)
        XCTAssertEqual(ranks.reduce(0, +), 24, "the budget: target rank × modules, the reserves dropped")
        XCTAssertGreaterThan(Set(ranks).count, 1, "the ranks went to some modules more than others: \(ranks)")
        XCTAssertTrue(ranks.allSatisfy { $0 >= 1 })
        XCTAssertEqual(cfg["init_r"]?.intValue.map(Int.init), ranks.max())
        let ad = try AdapterMethods.open(d + "/inc")
        XCTAssertEqual(ad.method, "increlora")
        XCTAssertThrowsError(try ad.recipe(dropout: 0)) { XCTAssertTrue("\($0)".contains("cannot be continued"), "\($0)") }
        _ = try assertFoldsLikeUnfused(d + "/inc")

        // Resumed at step 5, mid-growth.
        let checkpoints = s.checkpointDir
        s.output = d + "/resumed"
        s.resume = checkpoints + "/checkpoint-5"
        let resumed = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        XCTAssertEqual(losses(resumed.history), l)
        let a = try SafetensorsFile(path: d + "/inc/adapter_model.safetensors"), b = try SafetensorsFile(path: d + "/resumed/adapter_model.safetensors")
        XCTAssertEqual(a.tensors.map(\.name), b.tensors.map(\.name))
        for t in a.tensors { XCTAssertEqual(FloatBuffer(try a.tensor(t.name)).array, FloatBuffer(try b.tensor(t.name)).array, t.name) }
    }

    /// TriAdaptLoRA on MiniLM classification: ranks grow from 1 to 2 per module on average (24 in all)
    /// under the linear threshold; saved as a PEFT AdaLoRA folder (A' = C·A) with graft_method
    /// triadaptlora; it reloads and folds with the logits it trained, and a resumed run ends on the same adapter.
    func testTriAdaptLoRAGrowsItsRanksSavesAsAdaLoRAAndResumes() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        var c = TriAdaptLoRAConfig(targets: ModuleTargets(names: ["query", "value"]))
        c.initRank = 1; c.targetRank = 2; c.addRank = 1; c.warmup = 1; c.interval = 2
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl", adapter: c, output: d + "/tri")
        s.trainer.maxSteps = 14; s.trainer.batchSize = 8; s.trainer.learningRate = 2e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
        s.trainer.saveEvery = 5
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")
        let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/tri/adapter_config.json"))))
        XCTAssertEqual(cfg["graft_method"], .string("triadaptlora"))
        let ranks = (cfg["rank_pattern"]?.objectValue ?? []).map { $0.1.arrayValue?.filter { $0.boolValue == true }.count ?? -1 }
        XCTAssertEqual(ranks.count, 12)
        XCTAssertEqual(ranks.reduce(0, +), 24, "the budget: target rank × modules")
        XCTAssertEqual(try AdapterMethods.open(d + "/tri").method, "triadaptlora")
        _ = try assertFoldsLikeUnfused(d + "/tri")
        let checkpoints = s.checkpointDir
        s.output = d + "/resumed"
        s.resume = checkpoints + "/checkpoint-5"
        XCTAssertEqual(losses(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }).history), l)
        let a = try SafetensorsFile(path: d + "/tri/adapter_model.safetensors"), b = try SafetensorsFile(path: d + "/resumed/adapter_model.safetensors")
        for t in a.tensors { XCTAssertEqual(FloatBuffer(try a.tensor(t.name)).array, FloatBuffer(try b.tensor(t.name)).array, t.name) }
    }

    /// CorDA on MiniLM classification: the calibration pass starts the model unchanged (the first step's
    /// loss is the untrained model's, as with a zero-started LoRA) from a non-zero A and B; the saved folder
    /// is a plain LoRA of the original base at twice the rank (PEFT's conversion), which reloads and folds
    /// with the logits it trained; a resumed run (calibration redone, A and B from the checkpoint) ends
    /// on the same adapter.
    func testCorDAStartsFromTheTasksComponentsAndSavesAPlainLoRA() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        var c = CorDAConfig(lora: LoRAConfig(rank: 4, alpha: 8, targetModules: ["query", "value"]))
        c.calibrationExamples = 16
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl", adapter: c, output: d + "/corda")
        s.trainer.maxSteps = 10; s.trainer.batchSize = 8; s.trainer.learningRate = 1e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
        s.trainer.saveEvery = 4
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        var probe = s
        probe.adapter = LoRAConfig(rank: 4, alpha: 8, targetModules: ["query", "value"])
        probe.output = d + "/lora"
        let lora = try TrainingRun.run(probe, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertEqual(l[0], losses(lora.history)[0], accuracy: 1e-4, "CorDA starts from the unchanged model, as LoRA does")
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")

        let ad = try AdapterMethods.open(d + "/corda")
        XCTAssertEqual(ad.method, "lora", "a plain LoRA of the original base")
        XCTAssertEqual(ad.config.r, 8); XCTAssertEqual(ad.config.loraAlpha, 16)
        XCTAssertEqual(ad.config.json["graft_method"], .string("corda"))
        _ = try assertFoldsLikeUnfused(d + "/corda")

        let checkpoints = s.checkpointDir
        s.output = d + "/resumed"
        s.resume = checkpoints + "/checkpoint-4"
        XCTAssertEqual(losses(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }).history), l)
        let a = try SafetensorsFile(path: d + "/corda/adapter_model.safetensors"), b = try SafetensorsFile(path: d + "/resumed/adapter_model.safetensors")
        for t in a.tensors { XCTAssertEqual(FloatBuffer(try a.tensor(t.name)).array, FloatBuffer(try b.tensor(t.name)).array, t.name) }
    }

    /// ALLoRA on MiniLM classification: it learns from the same start as LoRA at scale 1 (its per-row
    /// rule is checked exactly in LayerGradientTests; under AdamW, whose steps do not depend on a
    /// gradient's constant scale, ten steps differ from LoRA's by ~1e-5 in the loss); the folder is a
    /// plain PEFT LoRA with lora_alpha = r and no dropout (PEFT reads it as LoRA at scale 1) plus
    /// `graft_method`; it reloads as ALLoRA, folds with the logits it trained, and a resumed run ends on
    /// the same adapter.
    func testALLoRATrainsSavesAsAPlainLoRAAndResumes() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        var c = ALLoRAConfig(targets: ModuleTargets(names: ["query", "value"]))
        c.rank = 4; c.eta = 4
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl", adapter: c, output: d + "/allora")
        s.trainer.maxSteps = 10; s.trainer.batchSize = 8; s.trainer.learningRate = 5e-3; s.trainer.logEvery = 1; s.validationSplit = 0.25
        s.trainer.saveEvery = 4
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")
        var plain = s
        plain.adapter = LoRAConfig(rank: 4, alpha: 4, targetModules: ["query", "value"])
        plain.output = d + "/lora"; plain.trainer.saveEvery = nil
        let lora = losses(try TrainingRun.run(plain, log: { _ in }, onEvent: { _ in }).history)
        XCTAssertEqual(l[0], lora[0], accuracy: 1e-6, "the same model at the first step")

        let ad = try AdapterMethods.open(d + "/allora")
        XCTAssertEqual(ad.method, "allora")
        XCTAssertEqual(ad.config.peftType, "LORA"); XCTAssertEqual(ad.config.r, 4); XCTAssertEqual(ad.config.loraAlpha, 4)
        XCTAssertEqual(ad.config.json["lora_dropout"]?.doubleValue, 0)
        XCTAssertEqual(try ad.recipe(dropout: 0) as? ALLoRAConfig, c, "continued as ALLoRA with its η")
        XCTAssertTrue(ad.layerUpdates(dropout: 0).allSatisfy { $0.update is ALLoRAUpdate })
        _ = try assertFoldsLikeUnfused(d + "/allora")

        let checkpoints = s.checkpointDir
        s.output = d + "/resumed"
        s.resume = checkpoints + "/checkpoint-4"
        XCTAssertEqual(losses(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }).history), l)
        let a = try SafetensorsFile(path: d + "/allora/adapter_model.safetensors"), b = try SafetensorsFile(path: d + "/resumed/adapter_model.safetensors")
        for t in a.tensors { XCTAssertEqual(FloatBuffer(try a.tensor(t.name)).array, FloatBuffer(try b.tensor(t.name)).array, t.name) }
    }

    /// Bottleneck adapters on MiniLM classification, each AdapterHub configuration: they learn; the
    /// folder is AdapterHub's (its config keys and tensor names, as the fixture AdapterHub wrote; the head
    /// as model_head.safetensors); it reloads with the logits it trained; `graft fuse` refuses it and
    /// says why; a resumed run ends on the same adapter.
    func testBottleneckAdaptersTrainAndSaveInAdapterHubsFormat() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        for kind in BottleneckConfig.Kind.allCases {
            var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl",
                              adapter: BottleneckConfig(kind: kind, llama: false), output: d + "/" + kind.rawValue)
            s.trainer.maxSteps = 10; s.trainer.batchSize = 8; s.trainer.learningRate = 1e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
            s.trainer.saveEvery = 4
            let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
            let l = losses(outcome.history)
            XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(kind): \(l)")
            let out = d + "/" + kind.rawValue, fixture = referenceRoot + "/models/bottleneck-minilm-" + kind.rawValue
            let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json"))))
            let ref = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: fixture + "/adapter_config.json"))))
            XCTAssertEqual(cfg["config"], ref["config"], "\(kind): AdapterHub's BnConfig")
            for k in ["hidden_size", "model_class", "model_type", "version"] { XCTAssertEqual(cfg[k], ref[k], "\(kind): \(k)") }
            let ours = try SafetensorsFile(path: out + "/adapter.safetensors"), theirs = try SafetensorsFile(path: fixture + "/adapter.safetensors")
            XCTAssertEqual(Dictionary(uniqueKeysWithValues: ours.tensors.map { ($0.name, $0.shape) }),
                           Dictionary(uniqueKeysWithValues: theirs.tensors.map { ($0.name, $0.shape) }), "\(kind): AdapterHub's names and shapes")
            XCTAssertEqual(try SafetensorsFile(path: out + "/model_head.safetensors").tensors.map(\.name).sorted(), ["classifier.bias", "classifier.weight"])
            // Reloaded: the logits the trained model gave.
            let clf = try Evaluation.classifier(model: try fetchedModel("minilm"), adapter: out)
            XCTAssertEqual(try AdapterMethods.open(out).method, "bottleneck")
            let logits = try clf.model.logits(Self.texts)
            XCTAssertEqual(clf.labels[logits[0][0] > logits[0][1] ? 0 : 1], "positive", "\(kind)")
            XCTAssertThrowsError(try Fuse.run(model: try fetchedModel("minilm"), adapter: out, to: out + ".fused")) {
                XCTAssertTrue("\($0)".contains("cannot be folded into the model"), "\($0)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".fused"))
            if kind == .houlsby {
                let checkpoints = s.checkpointDir
                s.output = d + "/resumed"
                s.resume = checkpoints + "/checkpoint-4"
                XCTAssertEqual(losses(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }).history), l)
                let a = try SafetensorsFile(path: out + "/adapter.safetensors"), b = try SafetensorsFile(path: d + "/resumed/adapter.safetensors")
                for t in a.tensors { XCTAssertEqual(FloatBuffer(try a.tensor(t.name)).array, FloatBuffer(try b.tensor(t.name)).array, t.name) }
            }
        }
    }

    /// IA³, AdaLoRA, IncreLoRA, TriAdaptLoRA, CorDA, bottleneck adapters, VeRA, NOLA, prompt and prefix tuning on SmolLM2 causal-LM SFT (the last two layers; IA³'s by regex, as PEFT's IA3Config has
    /// no layers option): the loss falls and the modules saved are those.
    func testMethodsTrainOnSmolLM2() throws {
        let d = try temporaryDirectory(self)
        try write(String(repeating: """
        {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]}

        """, count: 8), to: d + "/chat.jsonl")
        let ia3 = IA3Config(targets: ModuleTargets(names: [], regex: #"model\.layers\.(28|29)\.(self_attn\.(k_proj|v_proj)|mlp\.down_proj)"#),
                            feedforward: ["down_proj"])
        let vera = VeRAConfig(rank: 32, targets: ModuleTargets(names: ["q_proj", "v_proj"], layers: [28, 29]))
        let nola = NOLAConfig(rank: 4, alpha: 8, bases: 32, targets: ModuleTargets(names: ["q_proj", "v_proj"], layers: [28, 29]))
        let prompt = PromptTuningConfig(virtualTokens: 6, initialisation: .text, initText: "Answer briefly.")
        var adalora = AdaLoRAConfig(targets: ModuleTargets(names: ["q_proj", "v_proj"], layers: [28, 29]))
        adalora.initRank = 4; adalora.targetRank = 2; adalora.tinit = 1; adalora.tfinal = 2
        var increlora = IncreLoRAConfig(targets: ModuleTargets(names: ["q_proj", "v_proj"], layers: [28, 29]))
        increlora.initRank = 1; increlora.targetRank = 2; increlora.warmup = 0; increlora.interval = 1
        var triadapt = TriAdaptLoRAConfig(targets: ModuleTargets(names: ["q_proj", "v_proj"], layers: [28, 29]))
        triadapt.targetRank = 2
        var bottleneck = BottleneckConfig(kind: .parbn, llama: true)
        bottleneck.layers = [28, 29]
        var corda = CorDAConfig(lora: LoRAConfig(rank: 4, alpha: 8, targetModules: []))
        corda.lora.targets = ModuleTargets(names: ["q_proj", "v_proj"], layers: [28, 29]); corda.calibrationExamples = 4
        var ept = EPTConfig()
        ept.virtualTokens = 4; ept.embeddingPositions = 64; ept.initialisation = .text; ept.initText = "Answer briefly."
        var allora = ALLoRAConfig(targets: ModuleTargets(names: ["q_proj", "v_proj"], layers: [28, 29]))
        allora.rank = 4
        for (recipe, lr, modules) in [(ia3 as any AdapterRecipe, 5e-2, ["mlp.down_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                                      (allora, 5e-3, ["self_attn.q_proj", "self_attn.v_proj"]),
                                      (adalora, 5e-2, ["self_attn.q_proj", "self_attn.v_proj"]),
                                      (increlora, 5e-2, ["self_attn.q_proj", "self_attn.v_proj"]),
                                      (triadapt, 5e-2, ["self_attn.q_proj", "self_attn.v_proj"]),
                                      (corda, 5e-3, ["self_attn.q_proj", "self_attn.v_proj"]),
                                      (bottleneck, 1e-2, []),
                                      (vera, 3e-1, ["self_attn.q_proj", "self_attn.v_proj"]),
                                      (nola, 5e-2, ["self_attn.q_proj", "self_attn.v_proj"]),
                                      (prompt, 3e-2, []), (ept, 3e-2, []), (PrefixTuningConfig(virtualTokens: 4), 1e-1, [])] {
            var s = TrainSpec(model: try fetchedSmolLM2GGUF(), task: .causalLM, data: d + "/chat.jsonl", adapter: recipe, output: d + "/" + recipe.method)
            s.trainer.maxSteps = 6; s.trainer.batchSize = 4; s.trainer.learningRate = lr; s.trainer.logEvery = 1; s.validationSplit = 0
            let l = losses(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }).history)
            XCTAssertLessThan(l.last!, l.first! * 0.9, "\(recipe.method): \(l)")
            let ad = try AdapterMethods.open(d + "/" + recipe.method)
            XCTAssertEqual(ad.method, recipe.method == "corda" ? "lora" : recipe.method, "CorDA saves a plain LoRA")
            XCTAssertEqual(ad.moduleNames, modules.isEmpty ? [] : [28, 29].flatMap { i in modules.map { "model.layers.\(i).\($0)" } })
            if let tokens = try ad.virtualTokens() {
                XCTAssertEqual(tokens.count, recipe.reservedPositions)
                // The trained prompt or prefix moves the model's prediction for the training prompt toward "Paris".
                var lm = try CausalLM(path: try fetchedSmolLM2GGUF())
                let ids = lm.tokenizer.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n", addSpecialTokens: true)
                let paris = lm.tokenizer.encode("Paris", addSpecialTokens: false)[0]
                var cache = lm.model.makeCache()
                let before = try lm.model.forward(ids, cache: &cache)[0]
                try lm.model.attach(ad)
                cache = lm.model.makeCache()
                let after = try lm.model.forward(ids, cache: &cache)[0]
                func logProb(_ l: [Float]) -> Double {
                    let m = l.max()!
                    return Double(l[paris] - m) - log(l.reduce(0.0) { $0 + exp(Double($1 - m)) })
                }
                XCTAssertGreaterThan(logProb(after), logProb(before), "\(recipe.method)")
            }
        }
    }

    /// Prompt and prefix tuning on MiniLM classification: they learn; the folder has PEFT's tensor names
    /// and shapes and only config keys of PEFT's own, with its values (fixtures grad-minilm-prompt and
    /// grad-minilm-prefix); reloaded and continued, the same logits; `graft fuse` refuses them, saying why.
    func testPromptAndPrefixTuningTrainSaveAsPEFTAndReload() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        let folder = try fetchedModel("minilm")
        // The prefix starts from N(0, 1) keys and values (PEFT's init), far from anything the model saw: it
        // needs a larger step.
        for (recipe, fixture, n, lr) in [(PromptTuningConfig(virtualTokens: 8, initialisation: .text, initText: "Sentiment:") as any AdapterRecipe,
                                          "grad-minilm-prompt", 8, 3e-2),
                                         (PrefixTuningConfig(virtualTokens: 4), "grad-minilm-prefix", 4, 1e-1)] {
            let out = d + "/" + recipe.method
            var s = TrainSpec(model: folder, task: .classification, data: d + "/train.jsonl", adapter: recipe, output: out)
            s.trainer.maxSteps = 24; s.trainer.batchSize = 8; s.trainer.learningRate = lr; s.trainer.logEvery = 1; s.validationSplit = 0.25
            let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
            let l = losses(outcome.history)
            XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(recipe.method): \(l)")
            let width = recipe.method == "prompt" ? 384 : 6 * 2 * 384
            XCTAssertEqual(outcome.trainableParameters, n * width + 2 * 384 + 2, "the virtual tokens and the head")

            let ref = try SafetensorsFile(path: referenceRoot + "/models/\(fixture)/adapter_model.safetensors")
            let ours = try SafetensorsFile(path: out + "/adapter_model.safetensors")
            XCTAssertEqual(Set(ours.tensors.map(\.name)), Set(ref.tensors.map(\.name)))
            XCTAssertEqual(ours.tensors.first { $0.name == "prompt_embeddings" }?.shape, [n, width])
            let refCfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: referenceRoot + "/models/\(fixture)/adapter_config.json"))))
            let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_config.json"))))
            let refKeys = Set((refCfg.objectValue ?? []).map(\.0))
            for (k, _) in cfg.objectValue ?? [] { XCTAssertTrue(refKeys.contains(k), "PEFT's \(recipe.method) config has no key \(k)") }
            for k in ["peft_type", "task_type", "num_virtual_tokens", "token_dim", "num_layers", "num_attention_heads", "num_transformer_submodules",
                      "prompt_tuning_init", "prompt_tuning_init_text", "prefix_projection", "encoder_hidden_size"] {
                XCTAssertEqual(cfg[k], refCfg[k], "\(recipe.method): \(k)")
            }

            // Reloaded it classifies what it learnt; continued (a step too small to move it), the same logits.
            let clf = try Evaluation.classifier(model: folder, adapter: out)
            let trained = try clf.model.logits(Self.texts)
            XCTAssertEqual(clf.labels[trained[0][0] > trained[0][1] ? 0 : 1], "positive", "\(recipe.method): \(trained)")
            XCTAssertEqual(clf.labels[trained[1][0] > trained[1][1] ? 0 : 1], "negative", "\(recipe.method): \(trained)")
            var c = s
            c.output = out + "2"; c.initAdapter = out; c.trainer.learningRate = 1e-9; c.trainer.maxSteps = 1
            _ = try TrainingRun.run(c, log: { _ in }, onEvent: { _ in })
            let again = try Evaluation.classifier(model: folder, adapter: out + "2").model.logits(Self.texts)
            for (a, b) in zip(trained.joined(), again.joined()) { XCTAssertEqual(a, b, accuracy: 1e-3) }

            XCTAssertThrowsError(try Fuse.run(model: folder, adapter: out, to: out + ".fused")) {
                XCTAssertTrue("\($0)".contains("cannot be folded into the weights"), "\($0)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".fused"))
        }
    }

    /// EPT on MiniLM classification: it learns; the folder holds its seven tensors and head under its
    /// `peft_type` "EPT"; reloaded, it classifies what it learnt and, continued by a step too small to
    /// move it, gives the same logits; a resumed run ends on the same adapter; `graft fuse` refuses it.
    func testEPTTrainsSavesReloadsAndResumes() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        let folder = try fetchedModel("minilm")
        var c = EPTConfig()
        c.virtualTokens = 4; c.rank = 4; c.spaces = 2; c.embeddingPositions = 32
        c.initialisation = .text; c.initText = "Sentiment:"
        let out = d + "/ept"
        var s = TrainSpec(model: folder, task: .classification, data: d + "/train.jsonl", adapter: c, output: out)
        s.trainer.maxSteps = 24; s.trainer.batchSize = 8; s.trainer.learningRate = 3e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
        s.trainer.saveEvery = 10
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")
        XCTAssertEqual(outcome.trainableParameters, 4 * 384 + 32 * 4 + 4 * 384 + 2 * (384 * 4 * 2) + 2 * 384 + 2 + 2 * 384 + 2,
                       "prompt, A, B, the subspaces, the gate and the head")
        let file = try SafetensorsFile(path: out + "/adapter_model.safetensors")
        XCTAssertEqual(Set(file.tensors.map(\.name)).subtracting(["base_model.classifier.weight", "base_model.classifier.bias"]),
                       Set(EPTPrompt.names(m: 4, d: 384, r: 4, positions: 32, spaces: 2).map(\.0)))
        let ad = try AdapterMethods.open(out)
        XCTAssertEqual(ad.method, "ept"); XCTAssertEqual(ad.config.peftType, "EPT")
        XCTAssertEqual(try ad.recipe(dropout: 0) as? EPTConfig, c)
        let tokens = try XCTUnwrap(try ad.virtualTokens())
        XCTAssertGreaterThan(tokens.offsets!.array.map(abs).max()!, 0, "the embedding update moved from zero")

        let clf = try Evaluation.classifier(model: folder, adapter: out)
        let trained = try clf.model.logits(Self.texts)
        XCTAssertEqual(clf.labels[trained[0][0] > trained[0][1] ? 0 : 1], "positive", "\(trained)")
        XCTAssertEqual(clf.labels[trained[1][0] > trained[1][1] ? 0 : 1], "negative", "\(trained)")
        var more = s
        more.output = out + "2"; more.initAdapter = out; more.trainer.learningRate = 1e-9; more.trainer.maxSteps = 1; more.trainer.saveEvery = nil
        _ = try TrainingRun.run(more, log: { _ in }, onEvent: { _ in })
        let again = try Evaluation.classifier(model: folder, adapter: out + "2").model.logits(Self.texts)
        for (a, b) in zip(trained.joined(), again.joined()) { XCTAssertEqual(a, b, accuracy: 1e-3) }

        let checkpoints = s.checkpointDir
        s.output = d + "/resumed"
        s.resume = checkpoints + "/checkpoint-10"
        XCTAssertEqual(losses(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }).history), l)
        let b = try SafetensorsFile(path: d + "/resumed/adapter_model.safetensors")
        for t in file.tensors { XCTAssertEqual(FloatBuffer(try file.tensor(t.name)).array, FloatBuffer(try b.tensor(t.name)).array, t.name) }

        XCTAssertThrowsError(try Fuse.run(model: folder, adapter: out, to: out + ".fused")) {
            XCTAssertTrue("\($0)".contains("cannot be folded into the weights"), "\($0)")
        }
    }

    /// The input-embedding offsets a prompt carries (EPT's low-rank update), through both models: their
    /// gradient against a central difference along a random direction (L = Σ hidden ⊙ R, two sequences of
    /// different lengths, so padding and per-sequence indexing count); and in SmolLM2's cached decoding,
    /// token by token, the same last logits as one prefill — the offset index follows the position.
    func testPromptOffsetsGradientThroughBothModelsAndInCachedDecoding() throws {
        var rng = SeededRNG(seed: 5)
        func random(_ n: Int, _ scale: Float) -> FloatBuffer { FloatBuffer((0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * scale }) }
        func check<M: AdaptableModel>(_ model: inout M, hidden h: Int, batch: [[Int]], run: (M) throws -> (FloatBuffer, (FloatBuffer) -> Void)) throws {
            let rows = 6, tokens = VirtualTokens(placement: .embeddings, count: 2, width: h, values: random(2 * h, 0.05), offsets: random(rows * h, 0.05))
            try model.attach(tokens, source: "test")
            tokens.makeTrainable()
            let (y, back) = try run(model)
            let r = random(y.count, 1)
            back(r)
            let dir = random(rows * h, 1), eps: Float = 1e-3, o = tokens.offsets!, keep = o.array
            func loss(_ sign: Float) throws -> Double {
                for i in 0..<o.count { o.mutable[i] = keep[i] + sign * eps * dir[i] }
                let v = try run(model).0
                return zip(v.array, r.array).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            let fd = (try loss(1) - loss(-1)) / Double(2 * eps)
            let analytic = zip(tokens.offsetGradient!.array, dir.array).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(analytic, fd, accuracy: 2e-2 * abs(fd), "\(M.self)")
        }
        var bert = try BertModel(checkpoint: try Checkpoint(path: try fetchedModel("minilm")))
        try check(&bert, hidden: 384, batch: [[101, 2023, 2143, 2001, 2307, 102], [101, 2307, 102]]) { m in
            let (y, tape) = try m.forwardTraining([[101, 2023, 2143, 2001, 2307, 102], [101, 2307, 102]], rng: nil)
            return (y, { m.backward($0, tape: tape) })
        }
        var lm = try CausalLM(path: try fetchedSmolLM2GGUF())
        let ids = [1, 4093, 314, 260, 3575, 282], short = [1, 4093, 314]
        try check(&lm.model, hidden: 576, batch: [ids, short]) { m in
            let (y, tape) = try m.forwardTraining([ids, short], rng: nil)
            return (y, { m.backward($0, tape: tape) })
        }
        var cache = lm.model.makeCache()
        let prefill = try lm.model.forward(ids, cache: &cache)[0]
        cache = lm.model.makeCache()
        var last: [Float] = []
        _ = try lm.model.forward(Array(ids.prefix(2)), cache: &cache)
        for id in ids.dropFirst(2) { last = try lm.model.forward([id], cache: &cache)[0] }
        for (a, b) in zip(prefill, last) { XCTAssertEqual(a, b, accuracy: 1e-3) }
        lm.model.virtualTokens!.offsets!.mutable.update(repeating: 0)
        cache = lm.model.makeCache()
        XCTAssertGreaterThan(zip(try lm.model.forward(ids, cache: &cache)[0], prefill).map { abs($0 - $1) }.max()!, 1e-3, "the offsets count")
    }

    /// Full fine-tuning of chosen weights on MiniLM classification: it learns; the output is an HF folder with
    /// every base tensor under its own name (the trained ones changed, the others equal to the base's), the
    /// head as classifier.* and config.json naming the task model and its labels; `graft eval` runs it
    /// without an adapter. And on SmolLM2 causal LM: an HF Llama folder that Graft loads, the trained
    /// projection changed, and the loss lower on the training data.
    func testFullFineTuningWritesTheChangedModel() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        let folder = try fetchedModel("minilm")
        let recipe = FullFineTuningConfig(targets: ModuleTargets(names: ["query", "value"], layers: [4, 5]))
        var s = TrainSpec(model: folder, task: .classification, data: d + "/train.jsonl", adapter: recipe, output: d + "/full")
        s.trainer.maxSteps = 16; s.trainer.batchSize = 8; s.trainer.learningRate = 1e-3; s.trainer.logEvery = 1; s.validationSplit = 0.25
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")
        XCTAssertEqual(outcome.trainableParameters, 4 * (384 * 384 + 384) + 2 * 384 + 2, "four layers' weights and biases, and the head")

        let base = try Checkpoint(path: folder), out = try Checkpoint(path: d + "/full")
        XCTAssertEqual(Set(out.names), Set(base.names).union(["classifier.weight", "classifier.bias"]))
        for n in base.names where base.info(n)!.dtype.isFloatingPoint {
            let changed = FloatBuffer(try out.tensor(n)).array != FloatBuffer(try base.tensor(n)).array
            let trained = ["4", "5"].contains { i in ["query", "value"].contains { n.hasPrefix("encoder.layer.\(i).attention.self.\($0).") } }
            XCTAssertEqual(changed, trained, n)
        }
        let cfg = try XCTUnwrap(try out.config()?.json)
        XCTAssertEqual(cfg["architectures"], .array([.string("BertForSequenceClassification")]))
        XCTAssertEqual(cfg["id2label"]?["1"]?.stringValue, "positive")
        let eval = try Evaluation.classification(model: d + "/full", adapter: nil, data: d + "/train.jsonl", header: true,
                                                 textColumn: "text", labelColumn: "label", maxLength: nil)
        XCTAssertGreaterThan(eval.metrics.accuracy, 0.9, "the written model classifies the training data")
        XCTAssertFalse(FileManager.default.fileExists(atPath: d + "/full/adapter_config.json"), "a model, not an adapter")

        try write(String(repeating: """
        {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]}

        """, count: 8), to: d + "/chat.jsonl")
        var lmSpec = TrainSpec(model: try fetchedSmolLM2GGUF(), task: .causalLM, data: d + "/chat.jsonl",
                               adapter: FullFineTuningConfig(targets: ModuleTargets(names: ["v_proj"], layers: [29])), output: d + "/lm")
        lmSpec.trainer.maxSteps = 6; lmSpec.trainer.batchSize = 4; lmSpec.trainer.learningRate = 4e-3; lmSpec.trainer.logEvery = 1; lmSpec.validationSplit = 0
        let ll = losses(try TrainingRun.run(lmSpec, log: { _ in }, onEvent: { _ in }).history)
        XCTAssertLessThan(ll.last!, ll.first! * 0.9, "\(ll)")
        let tuned = try CausalLM(path: d + "/lm")
        let original = try CausalLM(path: try fetchedSmolLM2GGUF())
        for (module, trained) in [("model.layers.29.self_attn.v_proj", true), ("model.layers.28.self_attn.v_proj", false)] {
            XCTAssertEqual(tuned.model.linear(module)!.weight.array != original.model.linear(module)!.weight.array, trained, module)
        }
    }

    /// `graft compare`: each method trains on each task in its own run, with the same settings but its own
    /// learning rate; the table, JSON and HTML report every run's figures; a rerun reuses finished runs; bad
    /// input is named before anything trains.
    func testCompareTrainsEveryMethodOnEveryTaskAndReports() throws {
        let d = try temporaryDirectory(self)
        for t in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: d + "/" + t, withIntermediateDirectories: true)
            try write(toySentiment(48), to: d + "/\(t)/train.jsonl")
            for split in ["validation", "test"] { try write(toySentiment(16), to: d + "/\(t)/\(split).jsonl") }
        }
        let args = ["compare", "--methods", "lora,ia3,prompt", "--task", "a=\(d)/a", "--task", "b=\(d)/b", "--work-dir", d + "/work",
                    "--epochs", "2", "--batch-size", "16", "--lr", "prompt=0.05", "--json"]
        let (code, out, err) = try runGraft(Self.self, args)
        XCTAssertEqual(code, 0, err)
        let report = try JSONValue.parse([UInt8](out.utf8))
        let runs = report["runs"]?.arrayValue ?? []
        XCTAssertEqual(runs.map { "\($0["method"]?.stringValue ?? "")/\($0["task"]?.stringValue ?? "")" },
                       ["lora/a", "lora/b", "ia3/a", "ia3/b", "prompt/a", "prompt/b"])
        for r in runs {
            let acc = try XCTUnwrap(r["test_accuracy"]?.doubleValue)
            XCTAssertTrue((0...1).contains(acc))
            XCTAssertGreaterThan(r["trainable_parameters"]?.intValue ?? 0, 0)
            XCTAssertGreaterThan(r["peak_memory_bytes"]?.intValue ?? 0, 100_000_000, "a MiniLM run holds the model")
            XCTAssertGreaterThan(r["tokens_per_second"]?.doubleValue ?? 0, 0)
        }
        // The same settings for every run, the learning rate per method (one overridden).
        XCTAssertEqual(report["settings"]?["learning_rates"]?["prompt"]?.doubleValue, 0.05)
        XCTAssertEqual(report["settings"]?["learning_rates"]?["lora"]?.doubleValue, MethodComparison.learningRates["lora"])
        let training = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/work/runs/ia3/b/training_config.json"))))
        XCTAssertEqual(training["trainer"]?["learning_rate"]?.doubleValue, MethodComparison.learningRates["ia3"])
        XCTAssertEqual(training["trainer"]?["epochs"]?.intValue, 2)
        XCTAssertEqual(training["max_length"]?.intValue, 128)
        // PEFT's parameter counts: LoRA r=8 on query and value (6 layers × 2 × 8 × (384 + 384)) plus the head.
        let loraParameters: Int64 = 6 * 2 * 8 * 768 + 2 * 384 + 2
        XCTAssertEqual(runs[0]["trainable_parameters"]?.intValue, loraParameters)
        let html = try String(contentsOfFile: d + "/work/comparison.html", encoding: .utf8)
        XCTAssertTrue(html.contains("<svg") && html.contains("prompt"), "the report has its chart and table")

        // A rerun reuses every finished run and prints the table.
        let (c2, table, err2) = try runGraft(Self.self, Array(args.dropLast()))
        XCTAssertEqual(c2, 0, err2)
        XCTAssertEqual(err2.components(separatedBy: "already trained").count - 1, 6, err2)
        XCTAssertTrue(table.contains("fuse/merge") && table.contains("prompt"), table)

        for (bad, message) in [(["--methods", "lora,bitfit"], "unknown adapter method 'bitfit'"),
                               (["--methods", "lora", "--lr", "ia3=0.01"], "--lr 'ia3=0.01': ia3 is not among --methods"),
                               (["--methods", "lora", "--task", "c=\(d)/missing"], "missing")] {
            let (c, _, e) = try runGraft(Self.self, ["compare", "--work-dir", d + "/bad"] + bad)
            XCTAssertNotEqual(c, 0)
            XCTAssertTrue(e.contains(message), e)
            XCTAssertFalse(FileManager.default.fileExists(atPath: d + "/bad/comparison.json"))
        }
    }

    /// Prompt tuning's text initialisation is PEFT's: the text's ids with the tokenizer's special tokens, cut
    /// or repeated to the prompt's length, and the prompt starts as those word embeddings — equal to the
    /// initial prompts PEFT saved in the fixtures (MiniLM's "Sentiment:" repeated, SmolLM2's sentence cut).
    func testPromptInitialisationsArePEFTs() throws {
        func check<M: AdaptableModel>(_ model: M, fixture: String, tokenize: @escaping (String) -> [Int]) throws {
            let dir = referenceRoot + "/models/" + fixture
            let expected = try fixtureJSON("models/\(fixture)/expected.json")
            let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/adapter_config.json"))))
            let text = try XCTUnwrap(cfg["prompt_tuning_init_text"]?.stringValue), n = Int(cfg["num_virtual_tokens"]?.intValue ?? 0)
            XCTAssertEqual(tokenize(text), ints(expected["init_text_token_ids"]))
            XCTAssertEqual(PromptTuningConfig.repeated(tokenize(text), to: n), ints(expected["init_token_ids"]))
            let tokens = try PromptTuningConfig(virtualTokens: n, initialisation: .text, initText: text)
                .makeVirtualTokens(layout: model.virtualTokenLayout, embed: model.wordEmbeddings, tokenize: tokenize, seed: 0)
            let saved = FloatBuffer(try SafetensorsFile(path: dir + "/adapter_model.safetensors").tensor("prompt_embeddings"))
            XCTAssertEqual(tokens.values.array, saved.array, fixture)
        }
        let folder = try fetchedModel("minilm")
        let wordPiece = try TokenizerLoader.load(model: folder)
        try check(try BertModel(checkpoint: try Checkpoint(path: folder)), fixture: "grad-minilm-prompt") { wordPiece.encode($0, addSpecialTokens: true) }
        let lm = try CausalLM(path: try fetchedSmolLM2GGUF())
        try check(lm.model, fixture: "grad-smollm2-prompt") { lm.tokenizer.encode($0, addSpecialTokens: true) }

        // SAMPLE_VOCAB: each virtual token starts as the word embedding of a token drawn from the whole
        // vocabulary (PEFT draws with torch's generator, so the tokens themselves are not PEFT's).
        let bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        let layout = bert.virtualTokenLayout
        XCTAssertEqual(layout.vocabulary, 30522)
        let sampled = try PromptTuningConfig(virtualTokens: 16, initialisation: .sampleVocab)
            .makeVirtualTokens(layout: layout, embed: bert.wordEmbeddings, tokenize: { _ in [] }, seed: 3).values.array
        let table = try bert.wordEmbeddings(Array(0..<layout.vocabulary)).array, h = layout.hidden
        var rows = Set<Int>()
        for v in 0..<16 {
            let row = Array(sampled[(v * h)..<((v + 1) * h)])
            let id = try XCTUnwrap((0..<layout.vocabulary).first { Array(table[($0 * h)..<(($0 + 1) * h)]) == row }, "virtual token \(v) is no word's embedding")
            rows.insert(id)
        }
        XCTAssertGreaterThan(rows.count, 12, "drawn across the vocabulary, not one token")
        let (code, _, err) = try runGraft(Self.self, ["train", "--model", "minilm", "--task", "classification", "--data", "/nonexistent.jsonl",
                                                      "--method", "prompt", "--prompt-init", "sample-vocab", "--init-text", "x", "--output", "/tmp/none"])
        XCTAssertNotEqual(code, 0)
        XCTAssertTrue(err.contains("--init-text goes with --prompt-init text"), err)
    }

    /// VeRA on MiniLM: it learns; the folder holds the shared projections once and PEFT's names and
    /// config keys (fixture grad-minilm-vera, same targets); unfused and folded give the same logits.
    func testVeRATrainsSavesAsPEFTAndFolds() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        var recipe = VeRAConfig(rank: 16, targets: ModuleTargets(names: ["query", "value", "output.dense"]))
        recipe.dropout = 0.1
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl", adapter: recipe, output: d + "/vera")
        s.trainer.maxSteps = 12; s.trainer.batchSize = 8; s.trainer.learningRate = 2e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")
        XCTAssertEqual(outcome.trainableParameters, 24 * (384 + 16) + 2 * 384 + 2, "λ_b, λ_d per module and the head")

        let fixture = referenceRoot + "/models/grad-minilm-vera"
        let ref = try SafetensorsFile(path: fixture + "/adapter_model.safetensors")
        let ours = try SafetensorsFile(path: d + "/vera/adapter_model.safetensors")
        func shapes(_ f: SafetensorsFile) -> [String: [Int]] {
            Dictionary(uniqueKeysWithValues: f.tensors.filter { !$0.name.contains("classifier") }.map { ($0.name, $0.shape) })
        }
        XCTAssertEqual(shapes(ours), shapes(ref))
        let refCfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: fixture + "/adapter_config.json"))))
        let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/vera/adapter_config.json"))))
        let refKeys = Set((refCfg.objectValue ?? []).map(\.0))
        for (k, _) in cfg.objectValue ?? [] { XCTAssertTrue(refKeys.contains(k), "PEFT's VeraConfig has no key \(k)") }
        for k in ["peft_type", "task_type", "r", "save_projection", "projection_prng_key"] { XCTAssertEqual(cfg[k], refCfg[k], k) }

        _ = try assertFoldsLikeUnfused(d + "/vera")
    }

    /// NOLA on MiniLM: it learns; the file holds only the coefficients (the bases come back from the seed);
    /// reloaded unfused, folded, and continued, it gives the trained model's logits.
    func testNOLATrainsStoresOnlyCoefficientsAndReloads() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(96), to: d + "/train.jsonl")
        let recipe = NOLAConfig(rank: 4, alpha: 8, bases: 64, targets: ModuleTargets(names: ["query", "value"]))
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl", adapter: recipe, output: d + "/nola")
        s.trainer.maxSteps = 12; s.trainer.batchSize = 8; s.trainer.learningRate = 2e-2; s.trainer.logEvery = 1; s.validationSplit = 0.25
        let outcome = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(outcome.history)
        XCTAssertLessThan(l.suffix(3).reduce(0, +) / 3, l.prefix(3).reduce(0, +) / 3, "\(l)")
        XCTAssertEqual(outcome.trainableParameters, 12 * (64 + 64) + 2 * 384 + 2, "α and β per module, and the head")
        let file = try SafetensorsFile(path: d + "/nola/adapter_model.safetensors")
        XCTAssertEqual(Set(file.tensors.map { $0.name.components(separatedBy: ".").last! }), ["nola_alpha", "nola_beta", "weight", "bias"])
        XCTAssertEqual(file.tensors.filter { $0.name.hasSuffix("nola_alpha") }.count, 12)

        let folder = try fetchedModel("minilm")
        let (unfused, _) = try assertFoldsLikeUnfused(d + "/nola")
        let eval = try Evaluation.classification(model: folder, adapter: d + "/nola", data: d + "/train.jsonl", header: true,
                                                 textColumn: "text", labelColumn: "label", maxLength: nil)
        XCTAssertGreaterThan(eval.metrics.accuracy, 0.6, "the reloaded adapter classifies the training data")
        // Continuing it (training resumes from the stored coefficients, bases regenerated).
        var c = s
        c.output = d + "/nola2"; c.initAdapter = d + "/nola"; c.trainer.learningRate = 1e-9; c.trainer.maxSteps = 1
        _ = try TrainingRun.run(c, log: { _ in }, onEvent: { _ in })
        let again = try Evaluation.classifier(model: folder, adapter: d + "/nola2").model.logits(Self.texts)
        for (a, b) in zip(unfused.joined(), again.joined()) { XCTAssertEqual(a, b, accuracy: 1e-3) }
    }

    /// `--method`, `--list-methods` and the errors a user meets: an unknown method (the registry listed),
    /// another method's option, IA³ with --layers, a folder of a PEFT type Graft does not know.
    func testMethodCommandLineAndBadInput() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(32), to: d + "/train.jsonl")
        let (c0, list, _) = try runGraft(Self.self, ["train", "--list-methods"])
        XCTAssertEqual(c0, 0)
        for m in AdapterMethods.all { XCTAssertTrue(list.contains(m.name + "\n"), list) }
        XCTAssertTrue(list.contains("--feedforward"), list)
        let base = ["train", "--model", "minilm", "--task", "classification", "--data", d + "/train.jsonl", "--output", d + "/out"]
        func fails(_ extra: [String], _ text: String, line: UInt = #line) throws {
            let (code, _, err) = try runGraft(Self.self, base + extra)
            XCTAssertNotEqual(code, 0, line: line)
            XCTAssertTrue(err.contains(text), err, line: line)
            XCTAssertFalse(FileManager.default.fileExists(atPath: d + "/out"), "nothing written", line: line)
        }
        try fails(["--method", "bitfit"], "unknown adapter method 'bitfit' (known: \(AdapterMethods.all.map(\.name).joined(separator: ", ")))")
        try fails(["--method", "vera", "--feedforward", "x"], "--feedforward is not an option of --method vera (its options: --rank, --dropout, --projection-seed)")
        try fails(["--method", "ia3", "--rank", "4"], "--rank is not an option of --method ia3 (its options: --feedforward)")
        try fails(["--method", "lora", "--feedforward", "output.dense"], "--feedforward is not an option of --method lora")
        try fails(["--method", "ia3", "--layers", "1"], "IA³ has no layers_to_transform")
        try fails(["--method", "nola", "--bases", "0"], "NOLA needs at least one basis for A and for B")
        try fails(["--method", "lora", "--bases", "16"], "--bases is not an option of --method lora")
        try fails(["--method", "ia3", "--targets", "key", "--feedforward", "output.dense"], "feed-forward module 'output.dense' is not among the target modules")
        try fails(["--method", "prompt", "--targets", "query"], "--method prompt adapts none: it adds virtual tokens to the sequence")
        try fails(["--method", "prefix", "--init-text", "Review:"], "--init-text is not an option of --method prefix (its options: --virtual-tokens)")
        try fails(["--method", "prompt", "--virtual-tokens", "600"], "600 virtual tokens fill the model's context of 512 positions")
        try fails(["--method", "prompt", "--virtual-tokens", "500", "--max-length", "64"], "--max-length 64 plus 500 virtual tokens exceeds the model's context of 512 positions (at most 12)")
        try fails(["--method", "prompt", "--virtual-tokens", "0"], "prompt tuning needs at least one virtual token")
        try fails(["--method", "full", "--targets", "none"], "full fine-tuning needs target modules")
        try fails(["--method", "full", "--rank", "4"], "--rank is not an option of --method full (its options: none besides --targets)")
        try fails(["--method", "adalora", "--init-rank", "4", "--target-rank", "6"], "AdaLoRA --target-rank 6 cannot be met from --init-rank 4")
        try fails(["--method", "adalora", "--tinit", "3", "--tfinal", "2", "--max-steps", "5"],
                  "AdaLoRA's schedule does not fit the run: --tinit 3 + --tfinal 2 leave no step of the 5 to allocate ranks in")
        try fails(["--method", "lora", "--init-rank", "4"], "--init-rank is not an option of --method lora")
        try fails(["--method", "increlora", "--init-rank", "4", "--target-rank", "2"], "IncreLoRA --target-rank 2 cannot be met by growing from --init-rank 4")
        try fails(["--method", "increlora", "--target-rank", "8", "--max-steps", "3", "--delta-t", "2"], "IncreLoRA's budget cannot be met in 3 steps")
        try fails(["--method", "adalora", "--top-modules", "2"], "--top-modules is not an option of --method adalora")
        try fails(["--method", "bottleneck", "--targets", "query"], "bottleneck adapters sit between sublayers, not on named linear layers")
        try fails(["--method", "bottleneck", "--bottleneck", "lora"], "--bottleneck: 'lora' is not seqbn, houlsby or parbn")
        try fails(["--method", "corda", "--corda-mode", "spm"], "--corda-mode: 'spm' is not ipm or kpm")
        try fails(["--method", "corda", "--calibration-examples", "0"], "CorDA needs at least one calibration example")
        try fails(["--method", "allora", "--eta", "0"], "ALLoRA --eta must be a positive number")
        let start = Date()
        try fails(["--targets", "re:(.*.*)*x"], "target_modules regex '(.*.*)*x' did not finish matching the model's")
        XCTAssertLessThan(Date().timeIntervalSince(start), 20, "a catastrophic pattern is cut off, not run to the end")
        try fails(["--method", "ept", "--spaces", "0"], "EPT --spaces must be a positive integer")
        try fails(["--method", "ept", "--virtual-tokens", "600"], "600 virtual tokens fill the model's context of 512 positions")
        try fails(["--method", "ept", "--targets", "query"], "adapts none: it adds virtual tokens")
        try fails(["--method", "allora", "--alpha", "16"], "--alpha is not an option of --method allora")
        try fails(["--method", "triadaptlora", "--growth", "cubic"], "--growth: 'cubic' is not linear or exponential")
        try fails(["--method", "triadaptlora", "--max-rank", "4", "--target-rank", "6"], "TriAdaptLoRA --max-rank 4 is below --target-rank 6")
        try fails(["--method", "prefix", "--task", "embedding"], "trains virtual tokens for classification and causal-LM tasks, not sentence embeddings")
        let (ch, help, _) = try runGraft(Self.self, ["train", "--help"])
        XCTAssertEqual(ch, 0)
        XCTAssertTrue(help.contains("Examples per micro-batch (default \(TrainerOptions().batchSize))"), help)

        // A PEFT folder of a type Graft does not read: named, for every command that opens adapters.
        try FileManager.default.createDirectory(atPath: d + "/poly", withIntermediateDirectories: true)
        try write(#"{"peft_type": "POLY", "task_type": "SEQ_CLS", "r": 8}"#, to: d + "/poly/adapter_config.json")
        XCTAssertThrowsError(try AdapterMethods.open(d + "/poly")) {
            XCTAssertTrue("\($0)".contains("'POLY' is not a method Graft knows (known: ADALORA, EPT, IA3, LORA, NOLA, PREFIX_TUNING, PROMPT_TUNING, VERA)"), "\($0)")
        }
        XCTAssertThrowsError(try Fuse.run(model: try fetchedModel("minilm"), adapter: d + "/poly", to: d + "/fused")) {
            XCTAssertTrue("\($0)".contains("POLY"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: d + "/fused"))
        // graft fuse takes the model's short name, as the other commands do: the error is the adapter's.
        let (cf, _, errFuse) = try runGraft(Self.self, ["fuse", "--model", "minilm", "--adapter", d + "/poly", d + "/fused"])
        XCTAssertNotEqual(cf, 0)
        XCTAssertTrue(errFuse.contains("'POLY' is not a method Graft knows"), errFuse)
    }
}
