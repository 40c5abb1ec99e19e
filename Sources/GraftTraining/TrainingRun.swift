import Foundation
import GraftAdapters
import GraftData
import GraftFormats
import GraftModels
import GraftTensor
import GraftText

/// The training objectives `graft train` offers.
public enum TaskKind: String, Sendable, CaseIterable {
    case classification, causalLM = "causal-lm", embedding

    /// PEFT's task_type for the saved adapter.
    public var peftTaskType: String {
        switch self { case .classification: "SEQ_CLS"; case .causalLM: "CAUSAL_LM"; case .embedding: "FEATURE_EXTRACTION" }
    }
}

/// Everything a training run needs: model, task, data, adapter and trainer settings, output.
public struct TrainSpec: Sendable {
    public var model: String
    public var task: TaskKind
    public var data: String
    public var validation: String? = nil, test: String? = nil
    /// Fractions of `data` held out when no validation / test file is given.
    public var validationSplit = 0.1, testSplit = 0.0
    public var csvHeader = true
    public var textColumn = "text", labelColumn = "label"
    /// Longest sequence in tokens (nil: the model's limit).
    public var maxLength: Int? = nil
    public var truncate = true
    public var skipBadRows = false
    /// BERT's own dropout in training (hidden and attention rates); nil: the model config's rates, as
    /// transformers' train mode uses them.
    public var modelDropout: Double? = nil
    /// Causal LM: join consecutive examples into rows of up to the maximum length.
    public var packing = false
    /// Products with the frozen weights in bf16 (float32 accumulation), or all float32.
    public var bf16 = false
    /// The adapter method and its settings (`LoRAConfig`, `IA3Config`, …).
    public var adapter: any AdapterRecipe
    public var trainer = TrainerOptions()
    /// A PEFT adapter folder to continue training from.
    public var initAdapter: String? = nil
    /// Classification: start the head from the classifier saved in this adapter folder (e.g. a linear
    /// probe: LP-FT, Kumar et al. 2022) instead of a random one; the LoRA modules start fresh.
    public var initHead: String? = nil
    public var output: String
    public var overwrite = false
    /// Checkpoint folder to resume from, or "latest" for the newest in the checkpoint folder.
    public var resume: String? = nil

    /// The files and folders the run reads (the model as a fetched short name resolves to its folder).
    public var inputPaths: [String] {
        [(try? ModelLocator.resolve(model)) ?? model, data] + [validation, test, initAdapter, initHead, resume == "latest" ? nil : resume].compactMap { $0 }
    }

    public init(model: String, task: TaskKind, data: String, adapter: any AdapterRecipe, output: String) {
        self.model = model; self.task = task; self.data = data; self.adapter = adapter; self.output = output
    }

    /// The defaults of every setting (what `graft train` uses for an option not given).
    public static let defaults = TrainSpec(model: "", task: .classification, data: "",
                                           adapter: LoRAConfig(rank: LoRAConfig.defaultRank, alpha: Double(2 * LoRAConfig.defaultRank),
                                                               targetModules: LoRAConfig.defaultTargets(llama: false)), output: "")

    /// The recipe as LoRA's (or DoRA's), to set its fields; nil for other methods.
    public var lora: LoRAConfig? {
        get { adapter as? LoRAConfig }
        set { if let newValue { adapter = newValue } }
    }

    /// BERT's train-mode dropout rates (hidden, attention): `modelDropout` for both, else the config's.
    func dropout(for config: BertModel.Config) -> (hidden: Float, attention: Float) {
        modelDropout.map { (Float($0), Float($0)) } ?? (config.hiddenDropout, config.attentionDropout)
    }

    /// Where resumable checkpoints go: beside the output folder.
    public var checkpointDir: String { output + ".checkpoints" }

    /// The settings that decide the loss curve (stored in checkpoints, compared on resume).
    public var fingerprint: JSONValue {
        func file(_ p: String?) -> JSONValue {
            guard let p else { return .null }
            let size = (try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? nil
            return .object([("path", .string((p as NSString).standardizingPath)), ("bytes", size.map { .int(Int64($0)) } ?? .null)])
        }
        return .object([
            ("model", .string((model as NSString).standardizingPath)), ("task", .string(task.rawValue)),
            ("data", file(data)), ("validation", file(validation)), ("test", file(test)),
            ("validation_split", .double(validationSplit)), ("test_split", .double(testSplit)),
            ("text_column", .string(textColumn)), ("label_column", .string(labelColumn)),
            ("max_length", maxLength.map { .int(Int64($0)) } ?? .null), ("truncate", .bool(truncate)),
            ("skip_bad_rows", .bool(skipBadRows)), ("precision", .string(bf16 ? "bf16" : "f32")), ("packing", .bool(packing)), ("model_dropout", modelDropout.map { .double($0) } ?? .null),
            ("adapter", adapter.peftConfig(taskType: task.peftTaskType, baseModel: "", modulesToSave: [])),
            ("adapter_dropout", .double(adapter.dropout)),
            ("init_adapter", initAdapter.map { .string($0) } ?? .null), ("init_head", initHead.map { .string($0) } ?? .null),
            ("trainer", trainer.json),
        ])
    }
}

/// What a finished run reports.
public struct TrainOutcome: Sendable {
    public let adapterPath: String
    public let history: [JSONValue]
    public let test: (loss: Double, accuracy: Double?)?
    public let trainExamples: Int, validationExamples: Int, testExamples: Int
    public let trainableParameters: Int
}

/// A whole `graft train` run as a library call: load the model and data, attach the adapter, train,
/// evaluate, and write the PEFT adapter folder (atomically) with its metrics log and loss curve.
public enum TrainingRun {
    public static func run(_ spec: TrainSpec, log: (String) -> Void, onEvent: (TrainerEvent) -> Void) throws -> TrainOutcome {
        let out = try OutputDirectory(spec.output, overwrite: spec.overwrite, inputs: spec.inputPaths)
        do {
            let outcome = try train(spec, into: out, log: log, onEvent: onEvent)
            try out.commit()
            return outcome
        } catch {
            out.abandon()
            throw error
        }
    }

    /// Reads the training file and splits it (or reads the given validation/test files).
    static func records(_ spec: TrainSpec, stratify: ((Record) -> String?)?) throws -> (train: [Record], validation: [Record], test: [Record]) {
        let all = try Table.read(spec.data, header: spec.csvHeader)
        guard !all.isEmpty else { throw DataError(spec.data, "the dataset is empty") }
        let val = try spec.validation.map { try Table.read($0, header: spec.csvHeader) }
        let tst = try spec.test.map { try Table.read($0, header: spec.csvHeader) }
        let vFrac = val == nil ? spec.validationSplit : 0, tFrac = tst == nil ? spec.testSplit : 0
        let strata = stratify.map { f in all.map { f($0) ?? "" } }
        let s = Split.indices(count: all.count, validation: vFrac, test: tFrac, seed: spec.trainer.seed, strata: strata)
        return (s.train.map { all[$0] }, val ?? s.validation.map { all[$0] }, tst ?? s.test.map { all[$0] })
    }

    static func train(_ spec: TrainSpec, into out: OutputDirectory, log: (String) -> Void, onEvent: (TrainerEvent) -> Void) throws -> TrainOutcome {
        // Training splits its products over the cores itself (by columns, per attention head); BLAS's own
        // worker threads would only spin and compete for the same cores.
        Linalg.useSingleThreadedBLAS()
        let resumePath: String? = try spec.resume.map { r in
            guard r == "latest" else { return r }
            guard let last = Checkpoints.list(in: spec.checkpointDir).last else {
                throw TrainingError("--resume: no checkpoint in \(spec.checkpointDir)")
            }
            return last.path
        }
        let existing = try spec.initAdapter.map { try AdapterMethods.open($0) }
        var spec = spec
        if let existing { spec.adapter = try existing.recipe(dropout: spec.adapter.dropout) }  // its method and settings continue
        if spec.adapter.isHeadOnly && spec.task != .classification {
            throw TrainingError("no target modules given (--targets none trains only a classification head)")
        }
        if spec.adapter.virtualPlacement != nil && spec.task == .embedding {
            throw TrainingError("\(spec.adapter.label) trains virtual tokens for classification and causal-LM tasks, not sentence embeddings (their pooling would average the virtual tokens in)")
        }
        // What differs between the tasks is the model, how records become examples, and (classification)
        // the head; everything else — splits, reports, attaching the adapter, training, saving — is one path.
        switch spec.task {
        case .classification:
            var encoder = try BertModel(checkpoint: try Checkpoint(path: spec.model))
            let tokenizer = try TokenizerLoader.load(model: spec.model)
            var labels: [String] = []
            let (train, val, test) = try examples(spec, maxLength: encoder.config.maxPositions, stratify: { $0.text(spec.labelColumn) }, log: log,
                                                  prepare: { trainRecords in
                labels = Datasets.labels(trainRecords, column: spec.labelColumn)
                guard !labels.isEmpty else { throw DataError(spec.data, "no labels found in column '\(spec.labelColumn)'") }
                guard labels.count >= 2 else { throw DataError(spec.data, "only one class ('\(labels[0])') in column '\(spec.labelColumn)': classification needs two or more") }
            }) { rs, o, r in try Datasets.classification(rs, tokenizer: tokenizer, labels: labels, options: o, report: &r) }
            encoder.packForTraining(bf16: spec.bf16)
            encoder.trainingDropout = spec.dropout(for: encoder.config)
            var adapter = try attach(spec, to: &encoder, peftPrefix: "bert.", existing: existing,
                                     tokenize: { tokenizer.encode($0, addSpecialTokens: true) },
                                     calibrate: { m, n in for ex in train.prefix(n) { _ = try m.forwardTraining([ex.ids], rng: nil) } })
            let headSource = try existing ?? spec.initHead.map { try AdapterMethods.open($0) }
            if let h = spec.initHead {
                // The head's classes must be this data's, in the same order.
                if let names = try AdapterLabels.read(h)?.names, names != labels {
                    throw TrainingError("--init-head \(h): its classes are \(names.joined(separator: ", ")) but the training data's are \(labels.joined(separator: ", "))")
                }
            }
            var head = try classifierHead(headSource, classes: labels.count, hidden: encoder.config.hidden, seed: spec.trainer.seed)
            adapter.trainFully(&head, name: "classifier")
            let model = try BertForSequenceClassification(encoder: encoder, tokenizer: tokenizer, head: head)
            try AdapterLabels.write(labels, column: spec.labelColumn, to: out.tempPath)
            if adapter.recipe.isHeadOnly {
                // A linear probe: the encoder is frozen, so its features are computed once.
                log("linear probe: computing frozen features once for \(train.count + val.count + test.count) examples")
                let probe = ProbeTask(head: head, dropout: encoder.trainingDropout.hidden)
                return try finish(task: probe, adapter: adapter, spec: spec, train: try ProbeTask.examples(model, train),
                                  val: try ProbeTask.examples(model, val), test: try ProbeTask.examples(model, test),
                                  resume: resumePath, out: out, log: log, onEvent: onEvent)
            }
            return try finish(task: ClassificationTask(model: model), adapter: adapter, spec: spec, train: train, val: val, test: test,
                              resume: resumePath, out: out, log: log, onEvent: onEvent)
        case .causalLM:
            var lm = try CausalLM(path: spec.model)
            var (train, val, test) = try examples(spec, maxLength: lm.model.config.contextLength, stratify: nil, log: log) { rs, o, r in
                try Datasets.causalLM(rs, tokenizer: lm.tokenizer, chatTemplate: lm.chatTemplate, eos: lm.eosId, options: o, report: &r)
            }
            if spec.packing {
                let before = train.count, maxLength = spec.maxLength ?? lm.model.config.contextLength
                train = Datasets.pack(train, maxLength: maxLength)
                val = Datasets.pack(val, maxLength: maxLength); test = Datasets.pack(test, maxLength: maxLength)
                log("packing: \(before) training examples into \(train.count) rows of up to \(maxLength) tokens")
            }
            if spec.bf16 { lm.model.enableBF16() }
            let tokenizer = lm.tokenizer
            let adapter = try attach(spec, to: &lm.model, peftPrefix: "", existing: existing,
                                     tokenize: { tokenizer.encode($0, addSpecialTokens: true) },
                                     calibrate: { m, n in for ex in train.prefix(n) { var cache = m.makeCache(); _ = try m.forward(ex.ids, cache: &cache) } })
            return try finish(task: CausalLMTask(model: lm.model), adapter: adapter, spec: spec, train: train, val: val, test: test,
                              resume: resumePath, out: out, log: log, onEvent: onEvent)
        case .embedding:
            let enc = try SentenceEncoder(folder: spec.model)
            var bert = enc.model
            bert.packForTraining(bf16: spec.bf16)
            bert.trainingDropout = spec.dropout(for: bert.config)
            let (train, val, test) = try examples(spec, maxLength: enc.maxLength, stratify: nil, log: log) { rs, o, r in
                try Datasets.pairs(rs, tokenizer: enc.tokenizer, options: o, report: &r)
            }
            let tokenizer = enc.tokenizer
            let adapter = try attach(spec, to: &bert, peftPrefix: "", existing: existing,
                                     tokenize: { tokenizer.encode($0, addSpecialTokens: true) },
                                     calibrate: { m, n in for ex in train.prefix(n) { _ = try m.forwardTraining([ex.query], rng: nil) } })
            return try finish(task: EmbeddingTask(encoder: bert), adapter: adapter, spec: spec, train: train, val: val, test: test,
                              resume: resumePath, out: out, log: log, onEvent: onEvent)
        }
    }

    /// The data path every task shares: the records split (or the given files read), `prepare` run on
    /// the training records (e.g. to collect the labels), each split turned into examples by `convert`
    /// with the spec's options, and each split's counts logged.
    static func examples<E>(_ spec: TrainSpec, maxLength: Int, stratify: ((Record) -> String?)?, log: (String) -> Void,
                            prepare: ([Record]) throws -> Void = { _ in },
                            convert: ([Record], DataOptions, inout DataReport) throws -> [E]) throws -> (train: [E], val: [E], test: [E]) {
        // Virtual tokens (prompt, prefix tuning) take the first positions of the context.
        let reserved = spec.adapter.reservedPositions, room = maxLength - reserved
        guard room > 0 else {
            throw TrainingError("\(spec.adapter.label): \(reserved) virtual tokens fill the model's context of \(maxLength) positions")
        }
        if let m = spec.maxLength, m > room {
            throw TrainingError("--max-length \(m) plus \(reserved) virtual tokens exceeds the model's context of \(maxLength) positions (at most \(room))")
        }
        let (trainR, valR, testR) = try records(spec, stratify: stratify)
        try prepare(trainR)
        var o = DataOptions(maxLength: spec.maxLength ?? room)
        o.textColumn = spec.textColumn; o.labelColumn = spec.labelColumn; o.truncate = spec.truncate; o.skipBadRows = spec.skipBadRows
        var out: [[E]] = []
        for (name, rs) in [("train", trainR), ("validation", valR), ("test", testR)] {
            var r = DataReport()
            out.append(try convert(rs, o, &r))
            guard name != "test" || !rs.isEmpty else { continue }
            var line = "\(name): \(r.examples) examples"
            if r.skipped > 0 { line += ", \(r.skipped) bad rows skipped (first: \(r.firstSkipped ?? ""))" }
            if r.truncated > 0 { line += ", \(r.truncated) truncated to the maximum length" }
            log(line)
        }
        return (out[0], out[1], out[2])
    }

    /// The spec's adapter attached to `model` (or the adapter folder being continued).
    static func attach<M: AdaptableModel>(_ spec: TrainSpec, to model: inout M, peftPrefix: String, existing: (any LoadedAdapter)?,
                                          tokenize: @escaping (String) throws -> [Int],
                                          calibrate: ((inout M, Int) throws -> Void)? = nil) throws -> TrainableAdapter {
        try TrainableAdapter.attach(to: &model, recipe: spec.adapter, peftPrefix: peftPrefix, seed: spec.trainer.seed, from: existing,
                                    dropout: spec.adapter.dropout, allowHeadOnly: spec.task == .classification, tokenize: tokenize,
                                    calibrate: calibrate)
    }

    /// A new head (normal(0, 0.02) weights, zero bias, as transformers initialises it) or the one in
    /// the adapter being continued.
    static func classifierHead(_ existing: (any LoadedAdapter)?, classes: Int, hidden: Int, seed: UInt64) throws -> Linear {
        if let existing, let (w, b) = try existing.classificationHead() {
            guard w.shape == [classes, hidden] else {
                throw TrainingError("\(existing.path): its classifier is \(w.shape) but the data has \(classes) classes and the model \(hidden) features")
            }
            return Linear(weight: FloatBuffer(FloatBuffer(w).array), bias: FloatBuffer(b.map { FloatBuffer($0).array } ?? [Float](repeating: 0, count: classes)),
                          inFeatures: hidden, outFeatures: classes)
        }
        var rng = SeededRNG(seed: seed, key: "classifier")
        let w = (0..<(classes * hidden)).map { _ in 0.02 * rng.nextNormal() }
        return Linear(weight: FloatBuffer(w), bias: FloatBuffer(repeating: 0, count: classes), inFeatures: hidden, outFeatures: classes)
    }

    static func finish<T: TrainingTask>(task: T, adapter: TrainableAdapter, spec: TrainSpec, train: [T.Example], val: [T.Example],
                                        test: [T.Example], resume: String?, out: OutputDirectory, log: (String) -> Void,
                                        onEvent: (TrainerEvent) -> Void) throws -> TrainOutcome {
        let trainer = try Trainer(task: task, adapter: adapter, options: spec.trainer, train: train, validation: val)
        let parts = adapter.sublayerSites.isEmpty ? "\(adapter.modules.count + adapter.trainedWeights.count) modules" : "\(adapter.sublayerSites.count) adapter sites"
        log("training \(parts), \(adapter.trainableCount) trainable parameters, \(trainer.totalSteps) steps")
        try trainer.run(checkpoints: spec.trainer.saveEvery == nil ? nil : spec.checkpointDir, resumeFrom: resume, fingerprint: spec.fingerprint,
                        baseModel: spec.model, taskType: spec.task.peftTaskType, onEvent: onEvent)
        var history = trainer.history
        var testResult: (Double, Double?)? = nil
        if !test.isEmpty {
            let r = try trainer.evaluate(test)
            let acc = task.reportsAccuracy ? Double(r.correct) / Double(test.count) : nil
            testResult = (r.meanLoss, acc)
            var rec: [(String, JSONValue)] = [("step", .int(Int64(trainer.step))), ("test_loss", .double(r.meanLoss))]
            if let acc { rec.append(("test_accuracy", .double(acc))) }
            history.append(.object(rec))
        }
        if adapter.recipe.trainsBaseWeights {
            try FineTunedModel.write(adapter, base: spec.model, into: out.tempPath, labels: try AdapterLabels.read(out.tempPath)?.names)
        } else {
            try trainer.saveAdapter(to: out.tempPath, taskType: spec.task.peftTaskType, baseModel: spec.model)
        }
        let metrics = history.map { $0.serialized() }.joined(separator: "\n") + "\n"
        try FileBytes.write(Data(metrics.utf8), to: out.path("metrics.jsonl"))
        let title = "\(spec.task.rawValue) · \((spec.model as NSString).lastPathComponent) · \(spec.adapter.label)"
        try FileBytes.write(Data(LossCurve.svg(history, title: title).utf8), to: out.path("loss_curve.svg"))
        try FileBytes.write(Data((spec.fingerprint.serialized(pretty: true) + "\n").utf8), to: out.path("training_config.json"))
        return TrainOutcome(adapterPath: spec.output, history: history, test: testResult, trainExamples: train.count,
                            validationExamples: val.count, testExamples: test.count, trainableParameters: adapter.trainableCount)
    }
}
