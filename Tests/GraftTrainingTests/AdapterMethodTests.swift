import Foundation
import GraftAdapters
import GraftFormats
import GraftEval
import GraftMerging
import GraftModels
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

    /// IA³, VeRA and NOLA on SmolLM2 causal-LM SFT (the last two layers; IA³'s by regex, as PEFT's IA3Config has
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
        for (recipe, lr, modules) in [(ia3 as any AdapterRecipe, 5e-2, ["mlp.down_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                                      (vera, 3e-1, ["self_attn.q_proj", "self_attn.v_proj"]),
                                      (nola, 5e-2, ["self_attn.q_proj", "self_attn.v_proj"])] {
            var s = TrainSpec(model: try fetchedSmolLM2GGUF(), task: .causalLM, data: d + "/chat.jsonl", adapter: recipe, output: d + "/" + recipe.method)
            s.trainer.maxSteps = 6; s.trainer.batchSize = 4; s.trainer.learningRate = lr; s.trainer.logEvery = 1; s.validationSplit = 0
            let l = losses(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }).history)
            XCTAssertLessThan(l.last!, l.first! * 0.9, "\(recipe.method): \(l)")
            let ad = try AdapterMethods.open(d + "/" + recipe.method)
            XCTAssertEqual(ad.method, recipe.method)
            XCTAssertEqual(ad.moduleNames, [28, 29].flatMap { i in modules.map { "model.layers.\(i).\($0)" } })
        }
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
        try fails(["--method", "prefix"], "unknown adapter method 'prefix' (known: \(AdapterMethods.all.map(\.name).joined(separator: ", ")))")
        try fails(["--method", "vera", "--feedforward", "x"], "--feedforward is not an option of --method vera (its options: --rank, --dropout, --projection-seed)")
        try fails(["--method", "ia3", "--rank", "4"], "--rank is not an option of --method ia3 (its options: --feedforward)")
        try fails(["--method", "lora", "--feedforward", "output.dense"], "--feedforward is not an option of --method lora")
        try fails(["--method", "ia3", "--layers", "1"], "IA³ has no layers_to_transform")
        try fails(["--method", "nola", "--bases", "0"], "NOLA needs at least one basis for A and for B")
        try fails(["--method", "lora", "--bases", "16"], "--bases is not an option of --method lora")
        try fails(["--method", "ia3", "--targets", "key", "--feedforward", "output.dense"], "feed-forward module 'output.dense' is not among the target modules")
        let (ch, help, _) = try runGraft(Self.self, ["train", "--help"])
        XCTAssertEqual(ch, 0)
        XCTAssertTrue(help.contains("Examples per micro-batch (default \(TrainerOptions().batchSize))"), help)

        // A PEFT folder of a type Graft does not read: named, for every command that opens adapters.
        try FileManager.default.createDirectory(atPath: d + "/prefix", withIntermediateDirectories: true)
        try write(#"{"peft_type": "PREFIX_TUNING", "task_type": "SEQ_CLS", "num_virtual_tokens": 20}"#, to: d + "/prefix/adapter_config.json")
        XCTAssertThrowsError(try AdapterMethods.open(d + "/prefix")) {
            XCTAssertTrue("\($0)".contains("'PREFIX_TUNING' is not a method Graft knows (known: IA3, LORA, NOLA, VERA)"), "\($0)")
        }
        XCTAssertThrowsError(try Fuse.run(model: try fetchedModel("minilm"), adapter: d + "/prefix", to: d + "/fused")) {
            XCTAssertTrue("\($0)".contains("PREFIX_TUNING"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: d + "/fused"))
    }
}
