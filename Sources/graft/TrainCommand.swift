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
        abstract: "Train an adapter (LoRA, DoRA, IA³, …) on a model and a JSONL/CSV dataset; saves an HF PEFT adapter folder.",
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
          graft train --model minilm --task classification --data train.jsonl
                      --method ia3 --lr 3e-3 --output sentiment-ia3
          graft train --list-methods
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
    @Flag(help: "List the adapter methods (--method) with what each does and the options it takes, then exit.") var listMethods = false
    @OptionGroup(title: "Model and data") var data: TrainDataOptions
    @OptionGroup(title: "Adapter method (--list-methods shows them all)") var method: AdapterMethodOptions
    @OptionGroup(title: "Optimisation and schedule") var optimisation: OptimisationOptions
    @OptionGroup(title: "Output") var output: TrainOutputOptions

    /// Every key a --config file may hold: the option groups' own.
    static var fileKeys: [String] {
        TrainDataOptions.fileKeys + AdapterMethodOptions.fileKeys + OptimisationOptions.fileKeys + TrainOutputOptions.fileKeys
    }

    func spec() throws -> TrainSpec {
        let f = try config.map { try TrainConfigFile(path: $0, allowedKeys: Self.fileKeys) }
        let source = OptionSource(file: f, configPath: config)
        var spec = try data.spec(source)
        spec.adapter = try method.recipe(source, task: spec.task, model: spec.model)
        try method.apply(source, to: &spec)
        spec.trainer = try optimisation.trainerOptions(source)
        try output.apply(source, to: &spec)
        return spec
    }

    func run() throws {
        if listMethods { print(AdapterMethodOptions.methodList); return }
        let spec = try spec()
        let bar = TrainProgress()
        let outcome = try TrainingRun.run(spec, log: { printErr($0) }, onEvent: bar.handle)
        if output.json {
            let rates = outcome.history.compactMap { $0["tokens_per_second"]?.doubleValue }
            var o: [(String, JSONValue)] = [("adapter", .string(outcome.adapterPath)), ("method", .string(spec.adapter.method)),
                                           ("train_examples", .int(Int64(outcome.trainExamples))),
                                           ("trainable_parameters", .int(Int64(outcome.trainableParameters))),
                                           ("tokens_per_second", rates.isEmpty ? .null : .double((rates.reduce(0, +) / Double(rates.count)).rounded())),
                                           ("peak_memory_bytes", .int(Int64(ProcessMemory.peakResidentBytes)))]
            if let last = outcome.history.last(where: { $0["eval_loss"] != nil }) { o.append(("validation", last)) }
            if let t = outcome.test { o.append(("test_loss", .double(t.loss))); if let a = t.accuracy { o.append(("test_accuracy", .double(a))) } }
            print(JSONValue.object(o).serialized())
        } else {
            if let t = outcome.test {
                printErr(String(format: "test: loss %.4f", t.loss) + (t.accuracy.map { String(format: ", accuracy %.2f%%", $0 * 100) } ?? ""))
            }
            printErr("\(spec.adapter.trainsBaseWeights ? "fine-tuned model (HF folder)" : "adapter") written to \(outcome.adapterPath)")
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
    private var lastStep = 0

    func handle(_ e: TrainerEvent) {
        switch e {
        case let .step(step, total, loss, tps, epoch):
            // A new run (graft demo, graft bench route train several with one progress display) starts the
            // averages afresh: its steps start again, or its total differs.
            if firstStep == nil || step <= lastStep || total != lastTotal { firstStep = (step - 1, Date()); smoothed = nil }
            lastTotal = total; lastStep = step
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
