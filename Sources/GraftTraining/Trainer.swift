import Foundation
import GraftAdapters
import GraftFormats
import GraftTensor

/// Trainer settings (HF Trainer's names and defaults where it has them).
public struct TrainerOptions: Sendable, Equatable {
    public var epochs = 1
    /// Optimizer steps to run (overrides `epochs` when set).
    public var maxSteps: Int? = nil
    public var batchSize = 16
    public var gradientAccumulation = 1
    public var learningRate = 2e-4
    public var weightDecay = 0.0
    public var schedule = Schedule.linear
    public var warmupSteps: Int? = nil
    public var warmupRatio = 0.0
    /// Global gradient-norm clip (nil: none).
    public var maxGradNorm: Double? = 1.0
    public var logEvery = 10
    /// Evaluate on the validation set every N optimizer steps (nil: at the end of each epoch only).
    public var evalEvery: Int? = nil
    /// Write a resumable checkpoint every N optimizer steps (nil: none).
    public var saveEvery: Int? = nil
    public var keepCheckpoints = 2
    public var seed: UInt64 = 42
    /// Batches of similar lengths (HF's group_by_length): less padding, but less varied batches.
    public var groupByLength = false

    public init() {}

    /// The settings that decide the loss curve, for checking a resumed run continues the same one.
    public var json: JSONValue {
        .object([("epochs", .int(Int64(epochs))), ("max_steps", maxSteps.map { .int(Int64($0)) } ?? .null),
                 ("batch_size", .int(Int64(batchSize))), ("gradient_accumulation", .int(Int64(gradientAccumulation))),
                 ("learning_rate", .double(learningRate)), ("weight_decay", .double(weightDecay)), ("schedule", .string(schedule.rawValue)),
                 ("warmup_steps", warmupSteps.map { .int(Int64($0)) } ?? .null), ("warmup_ratio", .double(warmupRatio)),
                 ("max_grad_norm", maxGradNorm.map { .double($0) } ?? .null), ("seed", .int(Int64(seed))),
                 ("group_by_length", .bool(groupByLength))])
    }
}

/// What the trainer reports while it runs.
public enum TrainerEvent: Sendable {
    /// After each optimizer step: step (1-based), total steps, this step's mean loss, tokens/s so far.
    case step(step: Int, total: Int, loss: Double, tokensPerSecond: Double, epoch: Double)
    case evaluation(step: Int, loss: Double, accuracy: Double?)
    case checkpoint(step: Int, path: String)
    case resumed(step: Int, path: String)
}

/// The training loop: micro-batches → gradient accumulation → clipping → AdamW with a scheduled
/// learning rate; evaluation, checkpoints and exact resume (data order and dropout masks derive from
/// the seed and step, so a resumed run repeats the uninterrupted run's batches and masks).
public final class Trainer<Task: TrainingTask> {
    public let task: Task
    public let adapter: TrainableAdapter
    public let options: TrainerOptions
    let train: [Task.Example], validation: [Task.Example]
    let optimizer: AdamW
    /// What the adapter's method adds to each step (AdaLoRA's regulariser and rank budget), if anything.
    public private(set) var hook: (any AdapterTrainingHook)? = nil
    /// Metric records (JSON objects), one per log step and evaluation: the metrics log.
    public private(set) var history: [JSONValue] = []
    public private(set) var step = 0

    public init(task: Task, adapter: TrainableAdapter, options: TrainerOptions, train: [Task.Example], validation: [Task.Example]) throws {
        guard !train.isEmpty else { throw TrainingError("the training set is empty") }
        guard options.batchSize > 0, options.gradientAccumulation > 0 else { throw TrainingError("batch size and gradient accumulation must be positive") }
        let batches = (train.count + options.batchSize - 1) / options.batchSize
        guard batches >= options.gradientAccumulation else {
            throw TrainingError("\(train.count) training examples make \(batches) batches of \(options.batchSize), fewer than the \(options.gradientAccumulation) accumulated per step")
        }
        self.task = task; self.adapter = adapter; self.options = options; self.train = train; self.validation = validation
        optimizer = AdamW(adapter.parameters, weightDecay: Float(options.weightDecay))
        hook = try adapter.recipe.makeTrainingHook(modules: adapter.modules.map { ($0.path, $0.update) }, totalSteps: totalSteps, seed: options.seed)
    }

    public var batchesPerEpoch: Int { (train.count + options.batchSize - 1) / options.batchSize }
    public var stepsPerEpoch: Int { max(1, batchesPerEpoch / options.gradientAccumulation) }
    public var totalSteps: Int { options.maxSteps ?? options.epochs * stepsPerEpoch }
    public var warmup: Int { options.warmupSteps ?? Int((Double(totalSteps) * options.warmupRatio).rounded(.up)) }

    public func learningRate(at step: Int) -> Double {
        options.learningRate * options.schedule.factor(step: step, warmup: warmup, total: totalSteps)
    }

    /// The learning rate of elements born at optimizer step `birth`: the schedule restarted for them
    /// (the same warm-up, then down to the run's end), as IncreLoRA restarts it for each new group.
    public func learningRate(at step: Int, bornAt birth: Int) -> Double {
        options.learningRate * options.schedule.factor(step: step - birth, warmup: warmup, total: totalSteps - birth)
    }

    /// The micro-batch (example indices) number `i` of the whole run.
    private var epochCache: (Int, [[Int]])? = nil
    private func microBatch(_ i: Int) -> [Task.Example] {
        let e = i / (stepsPerEpoch * options.gradientAccumulation), within = i % (stepsPerEpoch * options.gradientAccumulation)
        if epochCache?.0 != e {
            epochCache = (e, Batching.epoch(e, lengths: train.map(task.length), batchSize: options.batchSize, seed: options.seed,
                                            bucketed: options.groupByLength))
        }
        return epochCache!.1[within].map { train[$0] }
    }

    /// Mean loss and accuracy over `examples` (no gradients), in batches of the training batch size
    /// (lengths sorted, so evaluation pads little).
    public func evaluate(_ examples: [Task.Example]) throws -> StepResult {
        var total = StepResult()
        let order = examples.indices.sorted { task.length(examples[$0]) < task.length(examples[$1]) }
        var start = 0
        while start < order.count {
            let batch = order[start..<min(order.count, start + options.batchSize)].map { examples[$0] }
            total += try task.step(batch, lossScale: 1, rng: nil, backward: false)
            start += options.batchSize
        }
        return total
    }

    /// Runs to the last step. `checkpoints`: folder for resumable checkpoints (`checkpoint-<step>`);
    /// `fingerprint`: the run's full configuration, stored in each checkpoint and compared on resume.
    public func run(checkpoints: String?, resumeFrom: String?, fingerprint: JSONValue, baseModel: String, taskType: String,
                    onEvent: (TrainerEvent) -> Void) throws {
        if let resumeFrom {
            try resume(resumeFrom, fingerprint: fingerprint)
            onEvent(.resumed(step: step, path: resumeFrom))
        }
        let total = totalSteps, accum = options.gradientAccumulation
        var trainSeconds = 0.0  // excluding evaluation and checkpoints, for tokens/s
        var tokens = 0
        var logLoss = 0.0, logSteps = 0
        while step < total {
            let stepStart = Date()
            adapter.zeroGrad()
            var result = StepResult()
            for k in 0..<accum {
                let micro = step * accum + k
                var rng = SeededRNG(seed: options.seed, key: "dropout/\(micro)")
                let r = try withUnsafeMutablePointer(to: &rng) { p in
                    try task.step(microBatch(micro), lossScale: 1 / Float(accum), rng: p, backward: true)
                }
                result += r
                tokens += r.tokens
            }
            // The step's loss: the mean over all examples (or target tokens) of its micro-batches, plus
            // the method's own term (whose gradient the hook adds).
            let loss = result.meanLoss + (hook?.beforeOptimizerStep() ?? 0)
            guard loss.isFinite else { throw TrainingError("loss became \(loss) at step \(step + 1); lower the learning rate") }
            let norm = clipGradients(adapter.parameters, maxNorm: options.maxGradNorm.map(Float.init))
            let lr = learningRate(at: step), now = step
            // Elements a method switched on mid-run follow the schedule from their own birth.
            optimizer.update { birth in Float(birth == 0 ? lr : self.learningRate(at: now, bornAt: birth)) }
            hook?.afterOptimizerStep(step)
            for (value, ranges) in hook?.takeActivated() ?? [] {
                guard let i = adapter.parameters.firstIndex(where: { $0.value.values.baseAddress == value.values.baseAddress }) else { continue }
                optimizer.restart(i, ranges: ranges)
            }
            step += 1
            trainSeconds += Date().timeIntervalSince(stepStart)
            logLoss += loss; logSteps += 1
            let epoch = Double(step) / Double(stepsPerEpoch)
            let tps = Double(tokens) / max(trainSeconds, 1e-9)
            onEvent(.step(step: step, total: total, loss: loss, tokensPerSecond: tps, epoch: epoch))
            if step % options.logEvery == 0 || step == total {
                history.append(.object([("step", .int(Int64(step))), ("epoch", .double((epoch * 1000).rounded() / 1000)),
                                        ("loss", .double(logLoss / Double(logSteps))), ("learning_rate", .double(lr)),
                                        ("grad_norm", .double(Double(norm))), ("tokens_per_second", .double(tps.rounded()))]))
                logLoss = 0; logSteps = 0
            }
            let endOfEpoch = step % stepsPerEpoch == 0
            if !validation.isEmpty, (options.evalEvery.map { step % $0 == 0 } ?? endOfEpoch) || step == total {
                let ev = try evaluate(validation)
                let acc = task.reportsAccuracy ? Double(ev.correct) / Double(max(1, validation.count)) : nil
                var rec: [(String, JSONValue)] = [("step", .int(Int64(step))), ("eval_loss", .double(ev.meanLoss))]
                if let acc { rec.append(("eval_accuracy", .double(acc))) }
                history.append(.object(rec))
                onEvent(.evaluation(step: step, loss: ev.meanLoss, accuracy: acc))
            }
            if let every = options.saveEvery, let dir = checkpoints, step % every == 0, step < total {
                let path = try saveCheckpoint(dir, fingerprint: fingerprint, baseModel: baseModel, taskType: taskType)
                onEvent(.checkpoint(step: step, path: path))
            }
        }
    }

    /// Writes the trained adapter's PEFT folder into `directory`, as the method's schedule left it.
    public func saveAdapter(to directory: String, taskType: String, baseModel: String) throws {
        try adapter.save(to: directory, taskType: taskType, baseModel: baseModel, hook: hook, final: true)
    }

    // MARK: - Checkpoints

    /// Writes `dir/checkpoint-<step>` (atomically): the adapter as a PEFT folder, the optimizer moments,
    /// and trainer_state.json (step, configuration, metrics so far). Keeps the newest `keepCheckpoints`.
    func saveCheckpoint(_ dir: String, fingerprint: JSONValue, baseModel: String, taskType: String) throws -> String {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = (dir as NSString).appendingPathComponent("checkpoint-\(step)")
        let out = try OutputDirectory(path, overwrite: true)
        do {
            try adapter.save(to: out.tempPath, taskType: taskType, baseModel: baseModel, hook: hook, final: false)
            var tensors: [(String, Tensor)] = []
            for (i, p) in adapter.parameters.enumerated() {
                tensors.append(("m." + p.name, optimizer.m[i].tensor(shape: p.shape)))
                tensors.append(("v." + p.name, optimizer.v[i].tensor(shape: p.shape)))
                if let b = optimizer.births[i] { tensors.append(("birth." + p.name, FloatBuffer(b.map(Float.init)).tensor(shape: p.shape))) }
            }
            try ShardedSafetensorsWriter.writeFile(out.path("optimizer.safetensors"), tensors)
            if let state = hook?.state(), !state.isEmpty { try ShardedSafetensorsWriter.writeFile(out.path("method_state.safetensors"), state) }
            let state = JSONValue.object([("step", .int(Int64(step))), ("optimizer_step", .int(Int64(optimizer.step))),
                                          ("config", fingerprint), ("history", .array(history))])
            try FileBytes.write(Data((state.serialized(pretty: true) + "\n").utf8), to: out.path("trainer_state.json"))
            try out.commit()
        } catch { out.abandon(); throw error }
        // Prune older checkpoints.
        let all = Checkpoints.list(in: dir)
        for old in all.dropLast(max(1, options.keepCheckpoints)) { try? FileManager.default.removeItem(atPath: old.path) }
        return path
    }

    func resume(_ path: String, fingerprint: JSONValue) throws {
        let statePath = (path as NSString).appendingPathComponent("trainer_state.json")
        guard let data = FileManager.default.contents(atPath: statePath) else { throw TrainingError("\(path): not a checkpoint (no trainer_state.json)") }
        let state: JSONValue
        do { state = try JSONValue.parse([UInt8](data)) } catch { throw TrainingError("\(statePath): invalid JSON: \(error)") }
        guard let saved = state["config"] else { throw TrainingError("\(statePath): missing 'config'") }
        if saved != fingerprint {
            let detail = JSONValue.differences(saved, fingerprint).map { k, a, b in
                "\(k): checkpoint \(a?.serialized() ?? "—") vs now \(b?.serialized() ?? "—")"
            }.joined(separator: "; ")
            throw TrainingError("\(path) was written by a run with a different configuration (\(detail)); resume with the same settings or start a new run")
        }
        guard let s = state["step"]?.intValue, let os = state["optimizer_step"]?.intValue else { throw TrainingError("\(statePath): missing 'step'") }
        // The adapter's tensors, in whichever files its format keeps them (PEFT's adapter_model.safetensors;
        // AdapterHub's adapter.safetensors and model_head.safetensors).
        var values: [String: FloatBuffer] = [:]
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
            .filter { $0.hasSuffix(".safetensors") && $0 != "optimizer.safetensors" && $0 != "method_state.safetensors" }.sorted()
        guard !files.isEmpty else { throw TrainingError("\(path): not a checkpoint (no adapter tensors)") }
        for f in files {
            let weights = try SafetensorsFile(path: (path as NSString).appendingPathComponent(f))
            for t in weights.tensors { values[t.name] = FloatBuffer(try weights.tensor(t.name)) }
        }
        try adapter.load(values, source: path)
        let opt = try SafetensorsFile(path: (path as NSString).appendingPathComponent("optimizer.safetensors"))
        func moment(_ prefix: String, _ p: TrainableParameter) throws -> FloatBuffer {
            guard opt.tensors.contains(where: { $0.name == prefix + p.name }) else { throw TrainingError("\(opt.path): missing '\(prefix + p.name)'") }
            return FloatBuffer(FloatBuffer(try opt.tensor(prefix + p.name)).array)
        }
        let births = try adapter.parameters.map { p -> [Int32]? in
            guard opt.tensors.contains(where: { $0.name == "birth." + p.name }) else { return nil }
            return try moment("birth.", p).array.map { Int32($0) }
        }
        try optimizer.restore(step: Int(os), m: adapter.parameters.map { try moment("m.", $0) }, v: adapter.parameters.map { try moment("v.", $0) },
                              births: births)
        if let hook {
            let statePath = (path as NSString).appendingPathComponent("method_state.safetensors")
            var tensors: [String: FloatBuffer] = [:]
            if FileManager.default.fileExists(atPath: statePath) {
                let f = try SafetensorsFile(path: statePath)
                for t in f.tensors { tensors[t.name] = FloatBuffer(try f.tensor(t.name)) }
            }
            try hook.restore(tensors, source: statePath)
        }
        step = Int(s)
        history = state["history"]?.arrayValue ?? []
    }
}

/// The `checkpoint-<step>` folders a run writes.
public enum Checkpoints {
    /// Checkpoint folders in `dir`, oldest first.
    public static func list(in dir: String) -> [(step: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.compactMap { n -> (Int, String)? in
            guard n.hasPrefix("checkpoint-"), let s = Int(n.dropFirst("checkpoint-".count)) else { return nil }
            return (s, (dir as NSString).appendingPathComponent(n))
        }.sorted { $0.0 < $1.0 }
    }
}
