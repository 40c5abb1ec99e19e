import ArgumentParser
import Foundation
import GraftEval
import GraftFormats
import GraftModels
import GraftTensor
import GraftTraining

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a model with an adapter on labelled data: accuracy, macro-F1, confusion matrix; perplexity for causal LMs.",
        discussion: """
        Examples:
          graft eval --model minilm --adapter sentiment-lora --data test.jsonl
          graft eval --model minilm --adapter sentiment-lora --data test.csv --no-header --text-column 1 --label-column 0 --json
          graft eval --model smollm2 --adapter smol-sft --data chats.jsonl         # perplexity
          graft eval --model merged/ties --adapter sentiment-lora --head-only --data test.jsonl
        Classification labels come from the adapter's labels.json (written by graft train), else 0, 1, …
        --head-only scores a model that already contains the task's update (a merge or a fuse) with
        the classifier head saved in --adapter, leaving its adapter modules out.
        """)

    @Option(help: "Model: HF folder, .gguf file, or a fetched short name.") var model: String
    @Option(help: "PEFT adapter folder (for classification: with its classifier head; not needed for a model folder with its own head, e.g. from graft train --method full).") var adapter: String?
    @Flag(help: "Use only the classifier head saved in --adapter, not its adapter update (for a merged or fused model).") var headOnly = false
    @Option(help: "auto | bf16 | f32: precision of the products with the weights (float32 sums). auto (default): as graft train — bf16 where the CPU has AVX512-BF16 and it measured faster (graft doctor).") var precision = "auto"
    @Option(help: "Labelled data (.jsonl or .csv).") var data: String
    @Option(help: "classification | causal-lm (default: causal-lm for a .gguf model, else classification).") var task: String?
    @Flag(help: "The CSV has no header row: columns are named 0, 1, 2, …") var noHeader = false
    @Option(help: "Text column (default text).") var textColumn: String = "text"
    @Option(help: "Label column (default: the one the adapter was trained on, else label).") var labelColumn: String?
    @Option(help: "Longest sequence in tokens (default: the model's limit).") var maxLength: Int?
    @Option(help: "Write one JSON line per example (label, prediction, logits) to this file.") var predictions: String?
    @Flag(help: "Print the metrics as JSON.") var json = false

    func validate() throws {
        _ = try usesBF16(precision: precision)
    }

    func run() throws {
        let path = try ModelLocator.resolve(model)
        let kind = task ?? (path.hasSuffix(".gguf") ? "causal-lm" : "classification")
        switch kind {
        case "classification":
            let (m, logits, _) = try Evaluation.classification(model: path, adapter: adapter, headOnly: headOnly,
                                                               bf16: try usesBF16(precision: precision), data: data, header: !noHeader, textColumn: textColumn,
                                                               labelColumn: labelColumn, maxLength: maxLength)
            if let p = predictions {
                let lines = logits.map { row -> String in
                    let best = row.indices.max { row[$0] < row[$1] }!
                    return JSONValue.object([("prediction", .string(m.labels[best])), ("logits", .array(row.map { .double(Double($0)) }))]).serialized()
                }
                try DurableFile.write(lines.joined(separator: "\n") + "\n", to: p)
            }
            if json { print(m.json.serialized()); return }
            print(String(format: "examples %d | accuracy %.2f%% | macro-F1 %.4f", m.total, m.accuracy * 100, m.macroF1))
            let w = max(8, m.labels.map(\.count).max() ?? 0)
            print("confusion (rows: true, columns: predicted)")
            print("".padding(toLength: w, withPad: " ", startingAt: 0) + m.labels.map { " " + $0.padding(toLength: w, withPad: " ", startingAt: 0) }.joined())
            for (i, row) in m.confusion.enumerated() {
                print(m.labels[i].padding(toLength: w, withPad: " ", startingAt: 0) + row.map { " " + String($0).padding(toLength: w, withPad: " ", startingAt: 0) }.joined())
            }
        case "causal-lm":
            let r = try Evaluation.perplexity(model: path, adapter: adapter, data: data, maxLength: maxLength)
            if json {
                print(JSONValue.object([("tokens", .int(Int64(r.tokens))), ("loss", .double(r.loss)), ("perplexity", .double(r.perplexity))]).serialized())
            } else {
                print(String(format: "tokens %d | loss %.4f | perplexity %.3f", r.tokens, r.loss, r.perplexity))
            }
        default:
            throw ValidationError("unknown task '\(kind)' (classification, causal-lm)")
        }
    }
}
