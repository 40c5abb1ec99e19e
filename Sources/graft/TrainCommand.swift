import ArgumentParser
import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor
import GraftTraining
#if canImport(Glibc)
import Glibc
#endif

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a LoRA (or DoRA) adapter on a model and a JSONL/CSV dataset; saves an HF PEFT adapter folder.",
        discussion: """
        Tasks and the rows they read:
          classification  {"text", "label"} (or --text-column/--label-column;
                          CSV too). BERT + pooler + a new linear head, saved
                          as modules_to_save "classifier".
          causal-lm       {"messages": [{"role", "content"}, ...]} through the
                          model's chat template (loss on assistant turns),
                          {"prompt", "completion"} (loss on the completion),
                          or {"text"} (loss on every token).
          embedding       {"query", "positive"[, "negative"]}: in-batch
                          negatives, as sentence-transformers'
                          MultipleNegativesRankingLoss (scale 20).

        Examples:
          graft train --model minilm --task classification --data train.jsonl
                      --epochs 3 --output sentiment-lora
          graft train --model minilm --task classification --data reviews.csv
                      --no-header --text-column 1 --label-column 0 --output out
          graft train --model smollm2 --task causal-lm --data chats.jsonl
                      --targets q_proj,v_proj --max-steps 200 --save-every 50
                      --output smol-sft
          graft train --config train.yaml --lr 1e-4   # flags win over the file
          graft train --config train.yaml --resume latest

        The output folder holds adapter_config.json and
        adapter_model.safetensors (HF PEFT's format: PEFT, graft fuse, graft
        merge and --adapter load it), metrics.jsonl, loss_curve.svg,
        training_config.json, and labels.json for classification. It appears
        only when training completes. --save-every writes checkpoints to
        OUTPUT.checkpoints/checkpoint-STEP; a resumed run continues on exactly
        the loss curve of an uninterrupted one.

        --config takes a YAML file of the same option names (snake_case or
        kebab-case), e.g.
          model: minilm
          task: classification
          data: train.csv
          targets: [query, value]
          rank: 8
          lr: 5.0e-4
        """)

    @Option(help: "YAML file with any of these options; flags given here override it.") var config: String?

    @Option(help: "Model: HF folder, .gguf file, or a fetched short name (minilm, smollm2).") var model: String?
    @Option(help: "classification | causal-lm | embedding.") var task: String?
    @Option(help: "Training data (.jsonl or .csv).") var data: String?
    @Option(help: "Validation data (default: --validation-split of the training data).") var validation: String?
    @Option(help: "Test data, evaluated once after training (default: --test-split of the training data).") var test: String?
    @Option(help: "Fraction of the training data held out for validation when no --validation file is given (default 0.1).") var validationSplit: Double?
    @Option(help: "Fraction held out for a final test when no --test file is given (default 0).") var testSplit: Double?
    @Flag(help: "The CSV has no header row: columns are named 0, 1, 2, …") var noHeader = false
    @Option(help: "Column holding the text (classification; default text).") var textColumn: String?
    @Option(help: "Column holding the label (classification; default label).") var labelColumn: String?
    @Option(help: "Longest sequence in tokens (default: the model's limit).") var maxLength: Int?
    @Flag(help: "Make a sequence longer than --max-length an error instead of truncating it.") var noTruncate = false
    @Flag(help: "Skip rows that do not fit the task's schema (counted and reported) instead of stopping.") var skipBadRows = false
    @Option(help: "BERT's own dropout while training (hidden and attention probabilities); default: the model config's rates, as transformers' train mode; 0 turns it off.") var modelDropout: Double?
    @Flag(help: "causal-lm: join consecutive examples into rows of up to --max-length tokens (no padding; attention crosses the joins, as TRL's packing).") var packing = false
    @Option(help: "auto | bf16 | f32: precision of the products with the frozen base weights (float32 sums, adapters and optimizer either way). bf16 is about 1.5× faster on CPUs with AVX512-BF16, gradients within ~2 % of float32; f32 gives PyTorch's float32 gradients to 1e-5. auto (default): bf16 where the CPU has AVX512-BF16 and bf16 products measured faster than float32 on it (graft doctor shows the choice).") var precision: String?

    @Option(help: "LoRA rank r (default 8).") var rank: Int?
    @Option(help: "LoRA alpha (default 2·rank); scaling = alpha/r, or alpha/√r with --rslora.") var alpha: Double?
    @Option(help: "Dropout on the adapter's input (default 0).") var dropout: Double?
    @Flag(help: "rsLoRA scaling alpha/√r.") var rslora = false
    @Flag(help: "DoRA: train a magnitude vector next to the low-rank direction update.") var dora = false
    @Option(help: "Target modules: comma-separated names (query,value / q_proj,v_proj), all-linear, or re:REGEX on the full module path; none trains only the classification head (a linear probe on frozen features). Default: query,value for BERT, q_proj,v_proj for Llama.") var targets: String?
    @Option(help: "Only these layer indices, comma-separated.") var layers: String?
    @Option(help: "Continue training this PEFT adapter folder (its rank, alpha and targets).") var adapter: String?
    @Option(help: "classification: start the head from the classifier in this adapter folder, e.g. a linear probe trained with --targets none (LP-FT); the LoRA modules start fresh.") var initHead: String?

    @Option(help: "Epochs (default 1).") var epochs: Int?
    @Option(help: "Optimizer steps (overrides --epochs).") var maxSteps: Int?
    @Option(help: "Examples per micro-batch (default 16).") var batchSize: Int?
    @Option(help: "Micro-batches accumulated per optimizer step (default 1).") var gradAccum: Int?
    @Option(help: "Peak learning rate (default 2e-4).") var lr: Double?
    @Option(help: "AdamW decoupled weight decay (default 0).") var weightDecay: Double?
    @Option(help: "constant | linear | cosine (default linear), after warmup.") var schedule: String?
    @Option(help: "Warmup steps (overrides --warmup-ratio).") var warmupSteps: Int?
    @Option(help: "Warmup as a fraction of all steps (default 0).") var warmupRatio: Double?
    @Option(help: "Clip the global gradient norm to this (default 1; 0 disables).") var maxGradNorm: Double?
    @Option(help: "Metrics log line every N steps (default 10).") var logEvery: Int?
    @Option(help: "Evaluate on the validation set every N steps (default: each epoch end).") var evalEvery: Int?
    @Option(help: "Write a resumable checkpoint every N steps (default: none).") var saveEvery: Int?
    @Option(help: "Checkpoints kept (default 2).") var keepCheckpoints: Int?
    @Option(help: "Seed for initialisation, splits, data order and dropout (default 42).") var seed: UInt64?
    @Flag(help: "Group examples of similar length into batches (less padding, faster; HF's group_by_length). Off by default: on the sentiment benchmark it cost ~1.5 points of accuracy.") var groupByLength = false
    @Option(help: "Resume from a checkpoint folder, or 'latest' (the newest in OUTPUT.checkpoints).") var resume: String?

    @Option(name: .shortAndLong, help: "Output adapter folder.") var output: String?
    @Flag(help: "Replace the output folder if it exists.") var force = false
    @Flag(help: "Print the final summary as JSON on standard output.") var json = false

    static let fileKeys = ["model", "task", "data", "validation", "test", "validation_split", "test_split", "no_header", "text_column",
                           "label_column", "max_length", "no_truncate", "skip_bad_rows", "precision", "packing", "model_dropout", "rank", "alpha", "dropout", "rslora", "dora",
                           "targets", "layers", "adapter", "init_head", "epochs", "max_steps", "batch_size", "grad_accum", "lr", "weight_decay",
                           "schedule", "warmup_steps", "warmup_ratio", "max_grad_norm", "log_every", "eval_every", "save_every",
                           "keep_checkpoints", "seed", "group_by_length", "resume", "output"]

    func spec() throws -> TrainSpec {
        let f = try config.map { try TrainConfigFile(path: $0, allowedKeys: Self.fileKeys) }
        let base = config.map { ($0 as NSString).deletingLastPathComponent } ?? ""
        /// Relative paths in the config file resolve against the working directory, then the file's folder.
        func path(_ s: String?) -> String? {
            guard let s, !s.hasPrefix("/"), config != nil, !FileManager.default.fileExists(atPath: s) else { return s }
            let alt = (base as NSString).appendingPathComponent(s)
            return FileManager.default.fileExists(atPath: alt) ? alt : s
        }
        func req<T>(_ v: T?, _ name: String) throws -> T {
            guard let v else { throw ValidationError("missing --\(name) (or '\(name.replacingOccurrences(of: "-", with: "_"))' in --config)") }
            return v
        }
        let taskName = try req(task ?? f?.string("task"), "task")
        guard let kind = TaskKind(rawValue: taskName) else {
            throw ValidationError("unknown task '\(taskName)' (choose \(TaskKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let modelSpec = try req(model ?? f?.string("model"), "model")
        let modelPath = try ModelLocator.resolve(path(modelSpec) ?? modelSpec)
        let dataPath = try req(path(data ?? f?.string("data")), "data")
        let out = try req(output ?? f?.string("output").flatMap(path), "output")
        let r = try rank ?? f?.int("rank") ?? 8
        var targetList = try targets.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? f?.list("targets")
        if targetList == nil { targetList = kind == .causalLM ? ["q_proj", "v_proj"] : ["query", "value"] }
        var lora = LoRAConfig(rank: r, alpha: try alpha ?? f?.double("alpha") ?? Double(2 * r), targetModules: targetList!)
        if targetList!.count == 1, targetList![0].hasPrefix("re:") { lora.targetRegex = String(targetList![0].dropFirst(3)); lora.targetModules = [] }
        if targetList! == ["none"] {
            guard kind == .classification else { throw ValidationError("--targets none (a linear probe) is for --task classification") }
            lora.targetModules = []
        }
        lora.dropout = try dropout ?? f?.double("dropout") ?? 0
        lora.useRSLoRA = try rslora || (f?.bool("rslora") ?? false)
        lora.useDoRA = try dora || (f?.bool("dora") ?? false)
        if let l = try layers.map({ $0.split(separator: ",").map(String.init) }) ?? f?.list("layers") {
            lora.layersToTransform = try l.map { s in
                guard let i = Int(s.trimmingCharacters(in: .whitespaces)), i >= 0 else { throw ValidationError("--layers: '\(s)' is not a layer index") }
                return i
            }
        }
        var t = TrainerOptions()
        t.epochs = try epochs ?? f?.int("epochs") ?? 1
        t.maxSteps = try maxSteps ?? f?.int("max_steps")
        t.batchSize = try batchSize ?? f?.int("batch_size") ?? 16
        t.gradientAccumulation = try gradAccum ?? f?.int("grad_accum") ?? 1
        t.learningRate = try lr ?? f?.double("lr") ?? 2e-4
        t.weightDecay = try weightDecay ?? f?.double("weight_decay") ?? 0
        let sched = try schedule ?? f?.string("schedule") ?? "linear"
        guard let s = Schedule(rawValue: sched) else { throw ValidationError("unknown schedule '\(sched)' (choose constant, linear, cosine)") }
        t.schedule = s
        t.warmupSteps = try warmupSteps ?? f?.int("warmup_steps")
        t.warmupRatio = try warmupRatio ?? f?.double("warmup_ratio") ?? 0
        let clip = try maxGradNorm ?? f?.double("max_grad_norm") ?? 1
        t.maxGradNorm = clip > 0 ? clip : nil
        t.logEvery = try logEvery ?? f?.int("log_every") ?? 10
        t.evalEvery = try evalEvery ?? f?.int("eval_every")
        t.saveEvery = try saveEvery ?? f?.int("save_every")
        t.keepCheckpoints = try keepCheckpoints ?? f?.int("keep_checkpoints") ?? 2
        t.seed = try seed ?? f?.int("seed").map(UInt64.init) ?? 42
        t.groupByLength = try groupByLength || (f?.bool("group_by_length") ?? false)
        for (name, v) in [("epochs", t.epochs), ("batch-size", t.batchSize), ("grad-accum", t.gradientAccumulation), ("log-every", t.logEvery)] where v < 1 {
            throw ValidationError("--\(name) must be at least 1")
        }
        for (name, v) in [("max-steps", t.maxSteps), ("eval-every", t.evalEvery), ("save-every", t.saveEvery)] where (v ?? 1) < 1 {
            throw ValidationError("--\(name) must be at least 1")
        }
        guard t.learningRate > 0 else { throw ValidationError("--lr must be positive") }
        var spec = TrainSpec(model: modelPath, task: kind, data: dataPath, lora: lora, output: out)
        spec.validation = try path(validation ?? f?.string("validation"))
        spec.test = try path(test ?? f?.string("test"))
        spec.validationSplit = try validationSplit ?? f?.double("validation_split") ?? 0.1
        spec.testSplit = try testSplit ?? f?.double("test_split") ?? 0
        guard (0..<1).contains(spec.validationSplit), (0..<1).contains(spec.testSplit), spec.validationSplit + spec.testSplit < 1 else {
            throw ValidationError("--validation-split and --test-split must be in [0, 1) and leave data to train on")
        }
        spec.csvHeader = try !(noHeader || (f?.bool("no_header") ?? false))
        spec.textColumn = try textColumn ?? f?.string("text_column") ?? "text"
        spec.labelColumn = try labelColumn ?? f?.string("label_column") ?? "label"
        spec.maxLength = try maxLength ?? f?.int("max_length")
        if let m = spec.maxLength, m < 2 { throw ValidationError("--max-length must be at least 2") }
        spec.truncate = try !(noTruncate || (f?.bool("no_truncate") ?? false))
        spec.skipBadRows = try skipBadRows || (f?.bool("skip_bad_rows") ?? false)
        let prec = try precision ?? f?.string("precision") ?? "auto"
        spec.bf16 = try usesBF16(precision: prec)
        spec.packing = try packing || (f?.bool("packing") ?? false)
        spec.modelDropout = try modelDropout ?? f?.double("model_dropout")
        if let p = spec.modelDropout, !(0..<1).contains(p) { throw ValidationError("--model-dropout must be in [0, 1)") }
        if spec.packing && kind != .causalLM { throw ValidationError("--packing is for --task causal-lm") }
        spec.initAdapter = try path(adapter ?? f?.string("adapter"))
        spec.initHead = try path(initHead ?? f?.string("init_head"))
        if spec.initHead != nil && kind != .classification { throw ValidationError("--init-head is for --task classification") }
        if spec.initHead != nil && spec.initAdapter != nil { throw ValidationError("--init-head and --adapter both set the head: give one") }
        spec.trainer = t
        spec.resume = try resume ?? f?.string("resume")
        spec.overwrite = force || spec.resume != nil  // a resumed run replaces the output it will complete
        return spec
    }

    func run() throws {
        let spec = try spec()
        let bar = TrainProgress()
        let outcome = try TrainingRun.run(spec, log: { printErr($0) }, onEvent: bar.handle)
        if json {
            var o: [(String, JSONValue)] = [("adapter", .string(outcome.adapterPath)), ("train_examples", .int(Int64(outcome.trainExamples))),
                                           ("trainable_parameters", .int(Int64(outcome.trainableParameters)))]
            if let last = outcome.history.last(where: { $0["eval_loss"] != nil }) { o.append(("validation", last)) }
            if let t = outcome.test { o.append(("test_loss", .double(t.loss))); if let a = t.accuracy { o.append(("test_accuracy", .double(a))) } }
            print(JSONValue.object(o).serialized())
        } else {
            if let t = outcome.test {
                printErr(String(format: "test: loss %.4f", t.loss) + (t.accuracy.map { String(format: ", accuracy %.2f%%", $0 * 100) } ?? ""))
            }
            printErr("adapter written to \(outcome.adapterPath)")
        }
    }
}

/// Training progress on standard error: a redrawn line (step, loss, tokens/s, ETA) on a terminal, a
/// plain line per logged interval when piped.
final class TrainProgress: @unchecked Sendable {
    private let start = Date()
    private let isTTY = isatty(2) != 0
    private var lastDraw = Date.distantPast
    private var smoothed: Double? = nil
    private var firstStep: (step: Int, time: Date)? = nil
    private var lastTotal = 0

    func handle(_ e: TrainerEvent) {
        switch e {
        case let .step(step, total, loss, tps, epoch):
            // A new run (graft demo trains several with one progress display) starts the averages afresh.
            if firstStep == nil || step <= firstStep!.step || total != lastTotal { firstStep = (step - 1, Date()); smoothed = nil }
            lastTotal = total
            smoothed = smoothed.map { 0.9 * $0 + 0.1 * loss } ?? loss
            let done = step - firstStep!.step, elapsed = Date().timeIntervalSince(firstStep!.time)
            let eta = done > 0 ? elapsed / Double(done) * Double(total - step) : 0
            let text = String(format: "train %d/%d | epoch %.2f | loss %.4f | %.0f tok/s | ETA %@", step, total, epoch, smoothed!, tps, duration(eta))
            if isTTY {
                let now = Date()
                guard now.timeIntervalSince(lastDraw) > 0.1 || step == total else { return }
                lastDraw = now
                let width = 24, filled = Int(Double(step) / Double(max(total, 1)) * Double(width))
                FileHandle.standardError.write(Data("\r\u{1B}[2K\(String(repeating: "█", count: filled))\(String(repeating: "░", count: width - filled)) \(text)".utf8))
                if step == total { FileHandle.standardError.write(Data("\n".utf8)) }
            } else if step == total || step % max(1, total / 20) == 0 {
                printErr(text)
            }
        case let .evaluation(step, loss, acc):
            let line = String(format: "eval @ step %d: loss %.4f", step, loss) + (acc.map { String(format: ", accuracy %.2f%%", $0 * 100) } ?? "")
            if isTTY { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
            printErr(line)
        case let .checkpoint(step, path):
            if isTTY { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
            printErr("checkpoint @ step \(step): \(path)")
        case let .resumed(step, path):
            printErr("resumed from \(path) at step \(step)")
        }
    }

    private func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%dh%02dm", t / 3600, t % 3600 / 60) : String(format: "%dm%02ds", t / 60, t % 60)
    }
}
