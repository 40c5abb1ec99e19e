import Foundation
import GraftAdapters
import GraftData
import GraftEval
import GraftFormats
import GraftMerging
import GraftModels
import GraftTensor
import GraftText
import GraftTraining

/// What a multi-task run reports while it works.
public enum PipelineEvent: Sendable {
    /// A new stage: index (1-based), count, title.
    case stage(Int, Int, String)
    case log(String)
    /// Progress of the adapter or probe being trained.
    case training(TrainerEvent)
}

/// The main job end to end: one LoRA adapter with a classification head per task, a linear probe per
/// task as the floor, every merge method over a small grid of scales chosen on the validation splits,
/// and every kept merged model scored on every task's test split with that task's head.
///
/// Work folder (each entry appears only when complete, so a rerun reuses what finished and redoes the
/// rest; `pipeline.json` holds the settings, and a rerun with other settings is refused):
///
///     adapters/TASK/            graft train output (LoRA + head), checkpoints in adapters/TASK.checkpoints
///     probes/TASK/              the linear probe (head only)
///     merges/METHOD/SCALE.yml   the merge config of each grid point (graft merge runs it as is)
///     merges/opcm/state/        the continual merge's running state
///     merged/METHOD/            the kept merged model (HF folder)
///     scores/*.json             every evaluation, cached
public final class MultiTaskPipeline {
    public let spec: MultiTaskSpec
    let emit: (PipelineEvent) -> Void
    private var examples: [String: [ClassificationTask.Example]] = [:]
    private var stageTimes: [(String, Double)] = []
    /// Whether this run trained an adapter or probe (so later caches are stale).
    private var trainedNow = false

    public init(_ spec: MultiTaskSpec, onEvent: @escaping (PipelineEvent) -> Void) {
        var s = spec
        s.workDir = MultiTaskPipeline.absolute(spec.workDir)
        s.model = MultiTaskPipeline.absolute(spec.model)
        s.tasks = spec.tasks.map { PipelineTask(name: $0.name, folder: MultiTaskPipeline.absolute($0.folder)) }
        self.spec = s
        emit = onEvent
    }

    static func absolute(_ p: String) -> String {
        let e = (p as NSString).expandingTildeInPath
        return e.hasPrefix("/") ? (e as NSString).standardizingPath
            : ((FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(e) as NSString).standardizingPath
    }

    func log(_ s: String) { emit(.log(s)) }

    /// Runs every stage not already cached in the work folder.
    public func run() throws -> PipelineResult {
        try checkInputs()
        try prepareWorkDir()
        let stages = 5
        try stage(1, stages, "train the linear-probe floor (a head on the frozen base) per task") {
            for (i, t) in spec.tasks.enumerated() { try train(t, index: i, probe: true) }
        }
        try stage(2, stages, "train one LoRA adapter per task, its head starting from the probe's (LP-FT)") {
            for (i, t) in spec.tasks.enumerated() { try train(t, index: i, probe: false) }
        }
        if trainedNow {
            // Scores and merges made from earlier adapters are not reused with new ones.
            for d in ["scores", "merges", "merged"] where FileManager.default.fileExists(atPath: spec.path(d)) {
                try FileManager.default.removeItem(atPath: spec.path(d))
            }
        }
        var taskResults: [TaskResult] = []
        try stage(3, stages, "score each adapter and probe on its own task") {
            for t in spec.tasks { taskResults.append(try taskResult(t)) }
        }
        var grids: [[(scale: Double, validation: [String: TaskScore])]] = []
        try stage(4, stages, "merge the \(spec.tasks.count) task updates: \(spec.methods.count) methods × their scale grids, scored on validation") {
            for m in spec.methods { grids.append(try grid(m)) }
        }
        var methods: [MethodResult] = []
        try stage(5, stages, "score the kept merged models on every task's test split") {
            for (m, g) in zip(spec.methods, grids) { methods.append(try keep(m, grid: g)) }
        }
        return PipelineResult(model: spec.model, workDir: spec.workDir, seed: spec.seed, maxLength: spec.maxLength, tasks: taskResults,
                              methods: methods, stageSeconds: stageTimes)
    }

    private func stage(_ i: Int, _ n: Int, _ title: String, _ body: () throws -> Void) throws {
        emit(.stage(i, n, title))
        let start = Date()
        try body()
        stageTimes.append((title, Date().timeIntervalSince(start)))
    }

    // MARK: inputs and the work folder

    func checkInputs() throws {
        let fm = FileManager.default
        guard !spec.tasks.isEmpty else { throw PipelineError("no tasks given") }
        guard Set(spec.tasks.map(\.name)).count == spec.tasks.count else { throw PipelineError("task names must be unique") }
        for t in spec.tasks {
            guard t.name.range(of: "^[A-Za-z0-9._-]+$", options: .regularExpression) != nil else {
                throw PipelineError("task name '\(t.name)': use letters, digits, '.', '_' or '-'")
            }
            for s in ["train", "validation", "test"] where !fm.fileExists(atPath: t.split(s)) {
                throw PipelineError("\(t.split(s)): missing (task '\(t.name)' needs train, validation and test splits; graft data prepare writes them)")
            }
        }
        for m in spec.methods where m.grid.isEmpty { throw PipelineError("merge method \(m.method): empty scale grid") }
    }

    func prepareWorkDir() throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: spec.workDir, withIntermediateDirectories: true)
        let file = spec.path("pipeline.json")
        let now = spec.fingerprint
        if let d = fm.contents(atPath: file) {
            let before = try JSONValue.parse([UInt8](d))
            if let (key, a, b) = JSONValue.differences(before, now).first {
                throw PipelineError("\(spec.workDir) holds a run with other settings (\(key): \(a?.serialized() ?? "absent") before, \(b?.serialized() ?? "absent") now); remove the folder or choose another work folder")
            }
            log("reusing finished steps in \(spec.workDir)")
        } else {
            try DurableFile.write(now.serialized(pretty: true) + "\n", to: file)
        }
    }

    // MARK: training

    func train(_ t: PipelineTask, index: Int, probe: Bool) throws {
        let out = probe ? spec.probePath(t) : spec.adapterPath(t)
        let what = probe ? "probe" : "adapter"
        if FileManager.default.fileExists(atPath: (out as NSString).appendingPathComponent("adapter_config.json")) {
            log("[\(index + 1)/\(spec.tasks.count)] \(t.name): \(what) already trained (\(out))")
            return
        }
        log("[\(index + 1)/\(spec.tasks.count)] \(t.name): training the \(what)")
        trainedNow = true
        var lora = spec.lora
        if probe { lora.targetModules = []; lora.targetRegex = nil }
        var s = TrainSpec(model: spec.model, task: .classification, data: t.split("train"), adapter: lora, output: out)
        s.validation = t.split("validation")
        s.maxLength = spec.maxLength
        s.bf16 = spec.bf16
        var o = probe ? spec.probe : spec.trainer
        if !probe, let e = spec.epochs[t.name] { o.epochs = e }
        if probe {
            o.evalEvery = Int.max / 2  // validation once, at the end
        } else {
            // LP-FT (Kumar et al. 2022): the head starts from the probe's, so fine-tuning moves the
            // features less — and a merge, which dilutes each task's update, degrades towards the probe.
            s.initHead = spec.probePath(t)
            // Checkpoints let an interrupted run continue on the same loss curve.
            o.saveEvery = spec.checkpointEvery
            if !Checkpoints.list(in: s.checkpointDir).isEmpty { s.resume = "latest"; s.overwrite = true }
        }
        s.trainer = o
        _ = try TrainingRun.run(s, log: { [emit] in emit(.log("  " + $0)) }, onEvent: { [emit] in emit(.training($0)) })
    }

    // MARK: scoring

    /// Each task's adapter (its LoRA on the base, its head) and probe on validation and test.
    func taskResult(_ t: PipelineTask) throws -> TaskResult {
        func scores(_ adapter: String, key: String) throws -> (TaskScore, TaskScore) {
            let cached = try ["validation", "test"].map { try cachedScores(key + "." + $0) }
            if let v = cached[0]?[t.name], let te = cached[1]?[t.name] { return (v, te) }
            let c = try Evaluation.classifier(model: spec.model, adapter: adapter, bf16: spec.bf16)
            var out: [TaskScore] = []
            for split in ["validation", "test"] {
                let s = try score(c, t, split)
                try storeScores([t.name: s], key: key + "." + split)
                out.append(s)
            }
            return (out[0], out[1])
        }
        let ind = try scores(spec.adapterPath(t), key: "adapter-\(t.name)")
        let probe = try scores(spec.probePath(t), key: "probe-\(t.name)")
        log(String(format: "%@: adapter %.2f%% validation, %.2f%% test; probe %.2f%% validation, %.2f%% test", t.name,
                   ind.0.accuracy * 100, ind.1.accuracy * 100, probe.0.accuracy * 100, probe.1.accuracy * 100))
        let labels = try AdapterLabels.read(spec.adapterPath(t))?.names ?? []
        let metrics = (try? String(contentsOfFile: spec.path("adapters", t.name, "metrics.jsonl"), encoding: .utf8)) ?? ""
        let history = metrics.split(separator: "\n").compactMap { try? JSONValue.parse([UInt8]($0.utf8)) }
        func lines(_ s: String) -> Int { ((try? String(contentsOfFile: t.split(s), encoding: .utf8)) ?? "").split(separator: "\n").count }
        return TaskResult(name: t.name, labels: labels, trainExamples: lines("train"), validationExamples: ind.0.examples,
                          testExamples: ind.1.examples, individual: ind, probe: probe, history: history,
                          adapterPath: spec.adapterPath(t), probePath: spec.probePath(t), dataFolder: t.folder)
    }

    /// One classifier on one task's split; the tokenized split is kept for the other models.
    func score(_ c: LoadedClassifier, _ t: PipelineTask, _ split: String) throws -> TaskScore {
        let key = t.name + "/" + split
        let ex: [ClassificationTask.Example]
        if let e = examples[key] { ex = e } else {
            ex = try Evaluation.examples(t.split(split), for: c, maxLength: spec.maxLength).examples
            examples[key] = ex
        }
        let m = Evaluation.metrics(try Evaluation.logits(c.model, ex, batchSize: spec.evalBatchSize), ex, labels: c.labels)
        return TaskScore(accuracy: m.accuracy, macroF1: m.macroF1, examples: m.total)
    }

    /// A merged model on every task's split, each with its own head.
    func scoreMerged(_ folder: String, split: String) throws -> [String: TaskScore] {
        var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        bert.packForTraining(bf16: spec.bf16, backward: false)
        let tokenizer = try TokenizerLoader.load(model: folder)
        var out: [String: TaskScore] = [:]
        for t in spec.tasks {
            let c = try Evaluation.classifier(encoder: bert, tokenizer: tokenizer, head: spec.adapterPath(t))
            out[t.name] = try score(c, t, split)
        }
        return out
    }

    func cachedScores(_ key: String) throws -> [String: TaskScore]? {
        // Written whole (temporary file, then rename); anything unreadable is recomputed.
        guard let d = FileManager.default.contents(atPath: spec.path("scores", key + ".json")),
              case let .object(o)? = try? JSONValue.parse([UInt8](d)) else { return nil }
        var out: [String: TaskScore] = [:]
        for (k, v) in o { guard let s = TaskScore(v) else { return nil }; out[k] = s }
        return out
    }

    func storeScores(_ s: [String: TaskScore], key: String) throws {
        try FileManager.default.createDirectory(atPath: spec.path("scores"), withIntermediateDirectories: true)
        let j = JSONValue.object(s.sorted { $0.key < $1.key }.map { ($0.key, $0.value.json) })
        try DurableFile.write(j.serialized(pretty: true) + "\n", to: spec.path("scores", key + ".json"))
    }

    // MARK: merging

    func configPath(_ m: MergeCandidate, _ scale: Double) -> String {
        spec.path("merges", m.method, "\(m.scaleParameter)-\(MergeCandidate.format(scale)).yml")
    }

    /// Writes the grid point's config and merges it into `out`.
    func merge(_ m: MergeCandidate, scale: Double, to out: String) throws {
        let cfgPath = configPath(m, scale)
        try FileManager.default.createDirectory(atPath: (cfgPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try DurableFile.write(m.config(base: spec.model, adapters: spec.tasks.map(spec.adapterPath), scale: scale), to: cfgPath)
        let cfg = try MergeConfig.load(path: cfgPath)
        var options = MergeOptions()
        options.overwrite = true
        if m.isContinual {
            // The running state depends only on the models and alpha: each scale only rewrites the model.
            _ = try ContinualMerge.run(try ContinualMerge.Plan(config: cfg), to: out, statePath: spec.path("merges", m.method, "state"),
                                       options: options)
        } else {
            _ = try MergeExecutor.run(try MergePlan(config: cfg), to: out, options: options)
        }
    }

    /// Every scale of one method on the validation splits.
    func grid(_ m: MergeCandidate) throws -> [(scale: Double, validation: [String: TaskScore])] {
        var out: [(Double, [String: TaskScore])] = []
        for scale in m.grid {
            let key = "\(m.method)-\(m.scaleParameter)-\(MergeCandidate.format(scale)).validation"
            var s = try cachedScores(key)
            if s == nil || s!.count != spec.tasks.count {
                let tmp = spec.path("merges", m.method, "\(m.scaleParameter)-\(MergeCandidate.format(scale)).model")
                try merge(m, scale: scale, to: tmp)
                defer { try? FileManager.default.removeItem(atPath: tmp) }
                s = try scoreMerged(tmp, split: "validation")
                try storeScores(s!, key: key)
            }
            let mean = spec.tasks.map { s![$0.name]!.accuracy }.reduce(0, +) / Double(spec.tasks.count)
            log(String(format: "%@ %@=%@: mean validation accuracy %.2f%% (", m.label, m.scaleParameter, MergeCandidate.format(scale), mean * 100)
                + spec.tasks.map { String(format: "%@ %.1f", $0.name, s![$0.name]!.accuracy * 100) }.joined(separator: ", ") + ")")
            out.append((scale, s!))
        }
        return out
    }

    /// Keeps the scale with the best mean validation accuracy (the first on ties), merges it into
    /// merged/METHOD and scores it on test.
    func keep(_ m: MergeCandidate, grid: [(scale: Double, validation: [String: TaskScore])]) throws -> MethodResult {
        func mean(_ v: [String: TaskScore]) -> Double { spec.tasks.map { v[$0.name]!.accuracy }.reduce(0, +) }
        var best = grid[0]
        for g in grid.dropFirst() where mean(g.validation) > mean(best.validation) { best = g }
        let out = spec.mergedPath(m)
        let key = "\(m.method)-\(m.scaleParameter)-\(MergeCandidate.format(best.scale)).test"
        let marker = (out as NSString).appendingPathComponent("graft_merge_config.yml")
        let kept = (try? String(contentsOfFile: marker, encoding: .utf8)) == m.config(base: spec.model, adapters: spec.tasks.map(spec.adapterPath), scale: best.scale)
        if !kept {
            log("\(m.label): keeping \(m.scaleParameter) = \(MergeCandidate.format(best.scale)) → \(out)")
            try merge(m, scale: best.scale, to: out)
        }
        var test = try cachedScores(key)
        if test == nil || test!.count != spec.tasks.count || !kept {
            test = try scoreMerged(out, split: "test")
            try storeScores(test!, key: key)
        }
        return MethodResult(candidate: m, grid: grid, chosenScale: best.scale, test: test!, modelPath: out, configPath: configPath(m, best.scale))
    }
}
