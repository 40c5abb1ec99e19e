import Foundation
import GraftAdapters
import GraftEval
import GraftFormats
import GraftModels
import GraftTensor
import GraftText
@testable import GraftTraining
import XCTest
import GraftTestSupport

final class TrainerTests: XCTestCase {
    func spec(_ d: String, steps: Int = 12, out: String = "out") throws -> TrainSpec {
        try write(toySentiment(96), to: d + "/train.jsonl")
        var s = TrainSpec(model: try fetchedModel("minilm"), task: .classification, data: d + "/train.jsonl",
                          adapter: LoRAConfig(rank: 4, alpha: 8, targetModules: ["query", "value"]), output: d + "/" + out)
        s.trainer.maxSteps = steps
        s.trainer.batchSize = 8
        s.trainer.learningRate = 2e-3
        s.trainer.logEvery = 1
        s.validationSplit = 0.25
        return s
    }

    func losses(_ h: [JSONValue]) -> [Double] { h.compactMap { $0["loss"]?.doubleValue } }

    func testClassificationLearnsAndIsDeterministic() throws {
        let d = try temporaryDirectory(self)
        var s = try spec(d, steps: 24)
        let a = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let acc = a.history.last { $0["eval_accuracy"] != nil }?["eval_accuracy"]?.doubleValue ?? 0
        XCTAssertGreaterThanOrEqual(acc, 0.9, "validation accuracy after 24 steps on a separable toy set")
        let l = losses(a.history)
        XCTAssertLessThan(l.suffix(4).reduce(0, +) / 4, l.prefix(4).reduce(0, +) / 4 - 0.1, "the loss falls")
        s.output = d + "/again"
        let b = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        XCTAssertEqual(losses(b.history), l, "same seed, same curve")
        for f in ["adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "loss_curve.svg", "training_config.json", "labels.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: d + "/out/" + f), f)
        }
        let svg = try String(contentsOfFile: d + "/out/loss_curve.svg", encoding: .utf8)
        XCTAssertTrue(svg.hasPrefix("<svg") && svg.contains("<polyline"))
    }

    func testResumeContinuesTheSameLossCurve() throws {
        let d = try temporaryDirectory(self)
        var s = try spec(d, steps: 8)
        s.trainer.saveEvery = 3
        s.lora?.dropout = 0.1  // dropout masks must repeat too
        s.trainer.gradientAccumulation = 2
        let full = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let cps = Checkpoints.list(in: s.checkpointDir).map(\.step)
        XCTAssertEqual(cps, [3, 6], "every 3 steps, the newest 2 kept")
        let checkpoints = s.checkpointDir
        s.output = d + "/resumed"
        s.resume = checkpoints + "/checkpoint-3"
        var resumedAt: Int? = nil
        let resumed = try TrainingRun.run(s, log: { _ in }, onEvent: { if case let .resumed(step, _) = $0 { resumedAt = step } })
        XCTAssertEqual(resumedAt, 3)
        XCTAssertEqual(losses(resumed.history), losses(full.history), "steps 1–3 from the checkpoint's log, 4–8 recomputed")
        let a = try SafetensorsFile(path: d + "/out/adapter_model.safetensors"), b = try SafetensorsFile(path: d + "/resumed/adapter_model.safetensors")
        for t in a.tensors { XCTAssertEqual(FloatBuffer(try a.tensor(t.name)).array, FloatBuffer(try b.tensor(t.name)).array, t.name) }
        // A different configuration cannot resume from it.
        s.trainer.learningRate = 1e-3
        s.output = d + "/other"
        XCTAssertThrowsError(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })) {
            XCTAssertTrue("\($0)".contains("different configuration (trainer.learning_rate: checkpoint 0.002 vs now 0.001)"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: d + "/other"))
    }

    /// The saved folder is what PEFT writes: same tensor names and shapes and config keys as the
    /// fixture adapter trained by PEFT with the same settings (r=8, alpha 16, query/value, SEQ_CLS).
    func testAdapterFolderHasPEFTNamesShapesAndConfig() throws {
        let d = try temporaryDirectory(self)
        var s = try spec(d, steps: 2)
        s.lora = LoRAConfig(rank: 8, alpha: 16, targetModules: ["query", "value"])
        try write(toySentiment(96).replacingOccurrences(of: "\"positive\"", with: "1").replacingOccurrences(of: "\"negative\"", with: "0"),
                  to: d + "/train.jsonl")
        _ = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let ref = try SafetensorsFile(path: referenceRoot + "/models/peft-minilm-seqcls/adapter_model.safetensors")
        let ours = try SafetensorsFile(path: d + "/out/adapter_model.safetensors")
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: ours.tensors.map { ($0.name, $0.shape) }),
                       Dictionary(uniqueKeysWithValues: ref.tensors.map { ($0.name, $0.shape) }))
        let refCfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: referenceRoot + "/models/peft-minilm-seqcls/adapter_config.json"))))
        let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/out/adapter_config.json"))))
        let refKeys = Set((refCfg.objectValue ?? []).map(\.0))
        for (k, _) in cfg.objectValue ?? [] { XCTAssertTrue(refKeys.contains(k), "PEFT has no config key \(k)") }
        for k in ["peft_type", "task_type", "r", "lora_alpha", "use_rslora", "use_dora", "bias"] {
            XCTAssertEqual(cfg[k], refCfg[k], k)
        }
        XCTAssertEqual(Set(cfg["target_modules"]?.arrayValue?.compactMap(\.stringValue) ?? []),
                       Set(refCfg["target_modules"]?.arrayValue?.compactMap(\.stringValue) ?? []))
        XCTAssertEqual(Set(cfg["modules_to_save"]?.arrayValue?.compactMap(\.stringValue) ?? []), ["classifier"])
        // And Graft's own loader reads it back with the same scaling.
        let loaded = try LoRAAdapter(path: d + "/out")
        XCTAssertEqual(loaded.modules.count, 12)
        XCTAssertEqual(loaded.modules.values.first?.scaling, 2)
    }

    /// A trained adapter, loaded back through the runtime's unfused path, gives the logits the trained
    /// model gave.
    func testTrainedAdapterReloadsWithTheSameOutputs() throws {
        let d = try temporaryDirectory(self)
        var s = try spec(d, steps: 4)
        s.lora?.useDoRA = true
        _ = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let folder = try fetchedModel("minilm")
        let adapter = try LoRAAdapter(path: d + "/out")
        XCTAssertTrue(adapter.modules.values.allSatisfy { $0.magnitude != nil }, "DoRA magnitudes saved")
        var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        try bert.attach(adapter.layerUpdates(dropout: 0), source: adapter.path)
        guard let (w, b) = try adapter.classificationHead() else { return XCTFail("no classifier") }
        let head = Linear(weight: FloatBuffer(w), bias: b.map { FloatBuffer($0) }, inFeatures: w.shape[1], outFeatures: w.shape[0])
        let clf = try BertForSequenceClassification(encoder: bert, tokenizer: try TokenizerLoader.load(model: folder), head: head)
        let logits = try clf.logits(["the film was great", "the plot was awful"])
        // Fused (W' = m ⊙ (W + ΔW)/‖W + ΔW‖) gives the same logits as unfused.
        var fused = try BertModel(checkpoint: try Checkpoint(path: folder))
        for (name, m) in adapter.modules {
            let path = String(name.dropFirst("bert.".count))
            _ = fused.updateLinear(path) { l in l = Linear(weight: adapter.updated(l.weight, m), bias: l.bias, inFeatures: l.inFeatures, outFeatures: l.outFeatures) }
        }
        let clf2 = try BertForSequenceClassification(encoder: fused, tokenizer: try TokenizerLoader.load(model: folder), head: head)
        let logits2 = try clf2.logits(["the film was great", "the plot was awful"])
        for (a, b) in zip(logits.joined(), logits2.joined()) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        XCTAssertGreaterThan(logits[0][1], logits[0][0], "positive text → the 'positive' class (id 1)")
        XCTAssertGreaterThan(logits[1][0], logits[1][1])
    }

    func testCausalLMAndEmbeddingTasksLearn() throws {
        let d = try temporaryDirectory(self)
        try write(String(repeating: """
        {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]}

        """, count: 8), to: d + "/chat.jsonl")
        var s = TrainSpec(model: try fetchedSmolLM2GGUF(), task: .causalLM, data: d + "/chat.jsonl",
                          adapter: LoRAConfig(rank: 4, alpha: 8, targetModules: ["q_proj", "v_proj"]), output: d + "/lm")
        s.trainer.maxSteps = 6; s.trainer.batchSize = 4; s.trainer.learningRate = 1e-2; s.trainer.logEvery = 1; s.validationSplit = 0
        s.lora?.layersToTransform = [28, 29]
        let lm = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let l = losses(lm.history)
        XCTAssertLessThan(l.last!, l.first! * 0.7, "\(l)")
        let ad = try LoRAAdapter(path: d + "/lm")
        XCTAssertEqual(Set(ad.modules.keys), ["model.layers.28.self_attn.q_proj", "model.layers.28.self_attn.v_proj",
                                              "model.layers.29.self_attn.q_proj", "model.layers.29.self_attn.v_proj"])

        let pairs = (0..<16).map { i in "{\"query\": \"question number \(i) about topic \(i % 4)\", \"positive\": \"answer \(i) on topic \(i % 4)\"}" }
        try write(pairs.joined(separator: "\n"), to: d + "/pairs.jsonl")
        var e = TrainSpec(model: try fetchedModel("minilm"), task: .embedding, data: d + "/pairs.jsonl",
                          adapter: LoRAConfig(rank: 4, alpha: 8, targetModules: ["query", "value"]), output: d + "/emb")
        e.trainer.maxSteps = 6; e.trainer.batchSize = 8; e.trainer.learningRate = 2e-3; e.trainer.logEvery = 1; e.validationSplit = 0
        let emb = try TrainingRun.run(e, log: { _ in }, onEvent: { _ in })
        let el = losses(emb.history)
        XCTAssertLessThan(el.last!, el.first!, "\(el)")
    }

    func testBadInputsAreClearAndWriteNothing() throws {
        let d = try temporaryDirectory(self)
        var s = try spec(d, steps: 2)
        func fails(_ s: TrainSpec, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }), line: line) {
                XCTAssertTrue("\($0)".contains(text), "\($0)", line: line)
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: s.output), "nothing written", line: line)
        }
        var t = s; t.lora?.targetModules = ["q_proj"]
        fails(t, "target module 'q_proj' is not a linear layer of this model; its modules are: attention.self.query, attention.self.key")
        t = s; t.lora?.rank = 0
        fails(t, "rank must be a positive integer")
        try write("", to: d + "/empty.jsonl")
        t = s; t.data = d + "/empty.jsonl"
        fails(t, "the dataset is empty")
        try write("{\"text\": \"a\"}\n{\"text\": \"b\"}\n", to: d + "/nolabel.jsonl")
        t = s; t.data = d + "/nolabel.jsonl"
        fails(t, "no labels found in column 'label'")
        t = s; t.maxLength = 3; t.truncate = false
        fails(t, "exceed the maximum length 3")
        t = s; t.resume = d + "/nowhere"
        fails(t, "not a checkpoint")
        // An existing output folder needs --force.
        try FileManager.default.createDirectory(atPath: s.output, withIntermediateDirectories: true)
        try write("keep", to: s.output + "/note.txt")
        XCTAssertThrowsError(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })) { XCTAssertTrue("\($0)".contains("exists"), "\($0)") }
        s.overwrite = true
        XCTAssertNoThrow(try TrainingRun.run(s, log: { _ in }, onEvent: { _ in }))
    }

    func testOptimizerAndSchedulesMatchTheirDefinitions() {
        // One AdamW step from zero moments moves each weight by lr·sign(g) (|g| ≫ ε), after decay.
        let p = TrainableParameter(name: "w", value: FloatBuffer([1, -2]), grad: FloatBuffer([0.5, -3]), shape: [2], decay: true)
        let opt = AdamW([p], weightDecay: 0.1)
        opt.update(lr: 0.01)
        XCTAssertEqual(p.value[0], 1 * (1 - 0.001) - 0.01, accuracy: 1e-6)
        XCTAssertEqual(p.value[1], -2 * (1 - 0.001) + 0.01, accuracy: 1e-6)
        XCTAssertEqual(Schedule.linear.factor(step: 5, warmup: 10, total: 110), 0.5)
        XCTAssertEqual(Schedule.linear.factor(step: 60, warmup: 10, total: 110), 0.5)
        XCTAssertEqual(Schedule.cosine.factor(step: 60, warmup: 10, total: 110), 0.5, accuracy: 1e-12)
        XCTAssertEqual(Schedule.constant.factor(step: 100, warmup: 10, total: 110), 1)
        let g = TrainableParameter(name: "g", value: FloatBuffer([0, 0]), grad: FloatBuffer([3, 4]), shape: [2], decay: false)
        XCTAssertEqual(clipGradients([g], maxNorm: 1), 5)
        XCTAssertEqual(g.grad[0], 0.6, accuracy: 1e-5)
    }

    func testCommandLineAndConfigFile() throws {
        let d = try temporaryDirectory(self)
        try write(toySentiment(48), to: d + "/train.jsonl")
        try write("model: minilm\ntask: classification\ndata: train.jsonl\ntargets: [query, value]\nrank: 4\nmax_steps: 2\nbatch_size: 8\n", to: d + "/t.yaml")
        let (code, out, err) = try runGraft(TrainerTests.self, ["train", "--config", d + "/t.yaml", "--lr", "1e-3", "--output", d + "/a", "--json"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(out.contains("\"trainable_parameters\""), out)
        let cfg = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/a/training_config.json"))))
        XCTAssertEqual(cfg["trainer"]?["learning_rate"]?.doubleValue, 1e-3, "the flag overrides the file")
        XCTAssertEqual(cfg["adapter"]?["r"]?.intValue, 4)
        try write("model: minilm\nbatchsize: 8\n", to: d + "/bad.yaml")
        let (c2, _, e2) = try runGraft(TrainerTests.self, ["train", "--config", d + "/bad.yaml", "--output", d + "/b"])
        XCTAssertNotEqual(c2, 0)
        XCTAssertTrue(e2.contains("unknown key 'batchsize'") && e2.contains("batch_size"), e2)
        let (c3, _, e3) = try runGraft(TrainerTests.self, ["train", "--model", "minilm", "--task", "regression", "--data", d + "/train.jsonl", "--output", d + "/c"])
        XCTAssertNotEqual(c3, 0)
        XCTAssertTrue(e3.contains("unknown task 'regression'"), e3)
    }
}

extension TrainerTests {
    /// Mean pooling + L2 normalisation (the embedding task's pooling) against finite differences.
    func testEmbeddingPoolingBackward() throws {
        let bert = try BertModel(checkpoint: try Checkpoint(path: try fetchedModel("minilm")))
        let task = EmbeddingTask(encoder: bert)
        let h = bert.config.hidden, t = 3, lengths = [3, 2]
        var rng = SeededRNG(seed: 3)
        let hidden = FloatBuffer((0..<(2 * t * h)).map { _ in rng.nextUnitFloat() - 0.5 })
        let dy = FloatBuffer((0..<(2 * h)).map { _ in rng.nextUnitFloat() - 0.5 })
        let (y, norms) = task.pool(hidden, lengths: lengths, length: t)
        let analytic = task.poolBackward(dy, pooled: y, norms: norms, lengths: lengths, length: t)
        let p = hidden.mutable
        var worst = 0.0
        for i in stride(from: 0, to: hidden.count, by: 7) {
            let keep = p[i], eps: Float = 1e-3
            func loss() -> Double { let (o, _) = task.pool(hidden, lengths: lengths, length: t); return zip(o.values, dy.values).reduce(0) { $0 + Double($1.0 * $1.1) } }
            p[i] = keep + eps; let up = loss()
            p[i] = keep - eps; let down = loss()
            p[i] = keep
            worst = max(worst, abs((up - down) / Double(2 * eps) - Double(analytic[i])))
        }
        XCTAssertLessThan(worst, 2e-3)
        // Padding positions (sequence 1, position 2) get no gradient.
        XCTAssertTrue((0..<h).allSatisfy { analytic[(1 * t + 2) * h + $0] == 0 })
    }

    /// `--adapter`: training continues from an HF PEFT adapter (its rank, alpha, targets and head).
    func testContinuesTrainingAPEFTAdapter() throws {
        let d = try temporaryDirectory(self)
        var s = try spec(d, steps: 1)
        try write(toySentiment(32).replacingOccurrences(of: "\"positive\"", with: "1").replacingOccurrences(of: "\"negative\"", with: "0"),
                  to: d + "/train.jsonl")
        s.initAdapter = referenceRoot + "/models/peft-minilm-seqcls"
        s.trainer.learningRate = 1e-9
        _ = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let ref = try SafetensorsFile(path: referenceRoot + "/models/peft-minilm-seqcls/adapter_model.safetensors")
        let ours = try SafetensorsFile(path: d + "/out/adapter_model.safetensors")
        XCTAssertEqual(Set(ours.tensors.map(\.name)), Set(ref.tensors.map(\.name)))
        // The saved config is the continued adapter's (r 8, alpha 16), not this run's defaults (r 4, alpha 8).
        let cfg = try PEFTAdapterConfig(path: d + "/out/adapter_config.json")
        XCTAssertEqual(cfg.r, 8); XCTAssertEqual(cfg.loraAlpha, 16)
        for t in ref.tensors {
            let a = FloatBuffer(try ref.tensor(t.name)).values, b = FloatBuffer(try ours.tensor(t.name)).values
            let diff = zip(a, b).map { abs($0 - $1) }.max() ?? 1
            XCTAssertLessThan(diff, 1e-6, "\(t.name) moved by \(diff) with a 1e-9 learning rate: it did not start from the adapter")
        }
    }
}

extension TrainerTests {
    /// `--targets none`: only the classification head trains on frozen features (a linear probe, the
    /// demo's floor); the saved folder holds just the head and evaluates like any adapter.
    func testLinearProbeTrainsOnlyTheHead() throws {
        let d = try temporaryDirectory(self)
        var s = try spec(d, steps: 30)
        s.lora?.targetModules = []
        s.trainer.learningRate = 1e-2
        let run = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        XCTAssertEqual(run.trainableParameters, 2 * 384 + 2)
        let acc = run.history.last { $0["eval_accuracy"] != nil }?["eval_accuracy"]?.doubleValue ?? 0
        XCTAssertGreaterThanOrEqual(acc, 0.8, "frozen MiniLM features separate the toy sentiment")
        let saved = try SafetensorsFile(path: d + "/out/adapter_model.safetensors")
        XCTAssertEqual(Set(saved.tensors.map(\.name)), ["base_model.model.classifier.weight", "base_model.model.classifier.bias"])
        let ev = try Evaluation.classification(model: try fetchedModel("minilm"), adapter: d + "/out", data: d + "/train.jsonl", header: true,
                                               textColumn: "text", labelColumn: nil, maxLength: nil)
        XCTAssertGreaterThanOrEqual(ev.metrics.accuracy, 0.8)
        XCTAssertEqual(ev.metrics.total, 96)
        // Without the classification task there is nothing to train.
        var lm = s; lm.task = .embedding; lm.output = d + "/probe-embedding"
        XCTAssertThrowsError(try TrainingRun.run(lm, log: { _ in }, onEvent: { _ in })) { XCTAssertTrue("\($0)".contains("no target modules"), "\($0)") }
    }

    /// `--init-head`: the LoRA run starts its head from a probe's classifier (LP-FT); classes must match.
    func testInitHeadStartsFromTheProbe() throws {
        let d = try temporaryDirectory(self)
        var probe = try spec(d, steps: 10, out: "probe")
        probe.lora?.targetModules = []
        probe.trainer.learningRate = 1e-2
        _ = try TrainingRun.run(probe, log: { _ in }, onEvent: { _ in })
        var s = try spec(d, steps: 1, out: "lpft")
        s.initHead = d + "/probe"
        s.trainer.learningRate = 1e-9  // one negligible step: the saved head is the probe's
        _ = try TrainingRun.run(s, log: { _ in }, onEvent: { _ in })
        let name = "base_model.model.classifier.weight"
        let p = try SafetensorsFile(path: d + "/probe/adapter_model.safetensors").tensor(name).floats()
        let h = try SafetensorsFile(path: d + "/lpft/adapter_model.safetensors").tensor(name).floats()
        XCTAssertLessThanOrEqual(zip(p, h).map { abs($0 - $1) }.max()!, 1e-6)
        // A probe for other classes is refused, naming both sets.
        try write(toySentiment(96).replacingOccurrences(of: "\"positive\"", with: "\"good\""), to: d + "/other.jsonl")
        var other = try spec(d, steps: 1, out: "bad")
        other.data = d + "/other.jsonl"
        other.initHead = d + "/probe"
        XCTAssertThrowsError(try TrainingRun.run(other, log: { _ in }, onEvent: { _ in })) {
            XCTAssertTrue("\($0)".contains("its classes are negative, positive but the training data's are good, negative"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: d + "/bad"))
    }
}
