import Foundation
import GraftAdapters
import GraftEval
import GraftFormats

/// `graft compare`: every adapter method trained on every task with the same data, budget (epochs,
/// batch, sequence length, warm-up and schedule) and seed, each with the learning rate suited to it,
/// then one table of what a user chooses between — test accuracy per task, trainable parameters,
/// training speed, peak memory, the size of what it writes, and whether it folds into the weights.
///
/// Each run is its own `graft train` process (`executable`), so its peak memory is its own and a
/// failure stays in its run; a finished run's summary (`result.json` in its folder) is reused when the
/// comparison is run again.
public struct MethodComparison: Sendable {
    public var model: String
    public var tasks: [PipelineTask]
    public var methods: [String]
    public var workDir: String
    public var epochs = 1
    public var batchSize = 32
    public var maxLength = 128
    public var warmupRatio = 0.1
    public var seed: UInt64 = 42
    /// auto | bf16 | f32, passed to every run.
    public var precision = "auto"
    /// Learning rates that replace `learningRates`' (by method).
    public var learningRateOverrides: [String: Double] = [:]

    /// Each method's learning rate: the scale its paper and PEFT's examples train it at (an adapter's few
    /// parameters take larger steps than full fine-tuning's; a prompt, larger still).
    public static let learningRates: [String: Double] = [
        "lora": 1e-3, "dora": 1e-3, "allora": 5e-3, "adalora": 2e-2, "increlora": 2e-2, "triadaptlora": 2e-2, "corda": 1e-3, "bottleneck": 5e-3, "ia3": 1e-2, "vera": 1e-2, "nola": 5e-3, "prompt": 3e-2, "ept": 3e-2, "prefix": 1e-2, "full": 5e-5,
    ]

    public init(model: String, tasks: [PipelineTask], methods: [String], workDir: String) {
        self.model = model; self.tasks = tasks; self.methods = methods; self.workDir = workDir
    }

    public func learningRate(_ method: String) -> Double { learningRateOverrides[method] ?? Self.learningRates[method] ?? 1e-3 }

    public func runPath(_ method: String, _ task: PipelineTask) -> String {
        (workDir as NSString).appendingPathComponent("runs/\(method)/\(task.name)")
    }

    /// One method on one task.
    public struct Run: Sendable {
        public let method: String, task: String
        public let testAccuracy: Double
        public let trainableParameters: Int
        public let tokensPerSecond: Double?
        public let peakMemoryBytes: Int
        /// Bytes of the tensors it writes (the adapter file, or the whole model for full fine-tuning).
        public let outputBytes: Int
        public let seconds: Double
    }

    /// The `graft train` arguments of one run.
    func arguments(_ method: String, _ task: PipelineTask) -> [String] {
        ["train", "--model", model, "--task", "classification", "--data", task.split("train"), "--validation", task.split("validation"),
         "--test", task.split("test"), "--method", method, "--max-length", String(maxLength), "--epochs", String(epochs),
         "--batch-size", String(batchSize), "--lr", String(learningRate(method)), "--warmup-ratio", String(warmupRatio),
         "--seed", String(seed), "--precision", precision, "--output", runPath(method, task), "--json"]
    }

    /// Trains what is not trained yet and returns every run, in method-then-task order.
    public func run(executable: String, log: (String) -> Void) throws -> [Run] {
        for m in methods { _ = try AdapterMethods.named(m) }
        for t in tasks {
            for s in ["train", "validation", "test"] where !FileManager.default.fileExists(atPath: t.split(s)) {
                throw PipelineError("task '\(t.name)': \(t.split(s)) is missing (a task folder holds train.jsonl, validation.jsonl and test.jsonl)")
            }
        }
        var runs: [Run] = []
        let total = methods.count * tasks.count
        for (i, m) in methods.enumerated() {
            for (j, t) in tasks.enumerated() {
                let k = i * tasks.count + j + 1, folder = runPath(m, t), resultFile = folder + "/result.json"
                if let d = FileManager.default.contents(atPath: resultFile), let r = try? Self.parse(JSONValue.parse([UInt8](d))) {
                    log("[\(k)/\(total)] \(m) on \(t.name): already trained (\(folder))")
                    runs.append(r)
                    continue
                }
                log("[\(k)/\(total)] \(m) on \(t.name): training (lr \(learningRate(m)))")
                if FileManager.default.fileExists(atPath: folder) { try FileManager.default.removeItem(atPath: folder) }  // an unfinished run
                try FileManager.default.createDirectory(atPath: (folder as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                let start = Date()
                let (status, out) = try Self.execute(executable, arguments(m, t))
                guard status == 0, let summary = try? JSONValue.parse([UInt8](out)) else {
                    throw PipelineError("\(m) on \(t.name): graft train failed (exit \(status)); its messages are above")
                }
                let seconds = Date().timeIntervalSince(start)
                let bytes = (try FileManager.default.contentsOfDirectory(atPath: folder)).filter { $0.hasSuffix(".safetensors") }
                    .reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: folder + "/" + $1)[.size] as? Int) ?? 0) }
                let record = JSONValue.object([
                    ("method", .string(m)), ("task", .string(t.name)), ("test_accuracy", summary["test_accuracy"] ?? .null),
                    ("trainable_parameters", summary["trainable_parameters"] ?? .null), ("tokens_per_second", summary["tokens_per_second"] ?? .null),
                    ("peak_memory_bytes", summary["peak_memory_bytes"] ?? .null), ("output_bytes", .int(Int64(bytes))),
                    ("seconds", .double((seconds * 10).rounded() / 10)),
                ])
                guard let r = Self.parse(record) else { throw PipelineError("\(m) on \(t.name): graft train's summary lacks the test accuracy") }
                try DurableFile.write(record.serialized(pretty: true) + "\n", to: resultFile)
                log(String(format: "  %@ on %@: test accuracy %.2f%%, %d trainable parameters", m, t.name, r.testAccuracy * 100, r.trainableParameters))
                runs.append(r)
            }
        }
        return runs
    }

    static func parse(_ j: JSONValue) -> Run? {
        guard let m = j["method"]?.stringValue, let t = j["task"]?.stringValue, let acc = j["test_accuracy"]?.doubleValue,
              let n = j["trainable_parameters"]?.intValue else { return nil }
        return Run(method: m, task: t, testAccuracy: acc, trainableParameters: Int(n), tokensPerSecond: j["tokens_per_second"]?.doubleValue,
                   peakMemoryBytes: Int(j["peak_memory_bytes"]?.intValue ?? 0), outputBytes: Int(j["output_bytes"]?.intValue ?? 0),
                   seconds: j["seconds"]?.doubleValue ?? 0)
    }

    /// Runs a child process with standard error passed through; returns its exit status and standard output.
    static func execute(_ executable: String, _ arguments: [String]) throws -> (Int32, Data) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, out)
    }

    // MARK: - Report

    /// Per method: mean test accuracy and the run figures averaged over the tasks.
    public struct Summary: Sendable {
        public let method: String
        public let accuracy: [String: Double]
        public let meanAccuracy: Double
        public let trainableParameters: Int
        public let tokensPerSecond: Double?
        public let peakMemoryBytes: Int
        public let outputBytes: Int
        public let fusable: Bool
        public let writesModel: Bool
    }

    public func summaries(_ runs: [Run]) -> [Summary] {
        methods.compactMap { m in
            let rs = runs.filter { $0.method == m }
            guard !rs.isEmpty, let info = try? AdapterMethods.named(m) else { return nil }
            let rates = rs.compactMap(\.tokensPerSecond)
            return Summary(method: m, accuracy: Dictionary(uniqueKeysWithValues: rs.map { ($0.task, $0.testAccuracy) }),
                           meanAccuracy: rs.map(\.testAccuracy).reduce(0, +) / Double(rs.count),
                           trainableParameters: rs.map(\.trainableParameters).max() ?? 0,
                           tokensPerSecond: rates.isEmpty ? nil : rates.reduce(0, +) / Double(rates.count),
                           peakMemoryBytes: rs.map(\.peakMemoryBytes).max() ?? 0, outputBytes: rs.map(\.outputBytes).max() ?? 0,
                           fusable: info.fusable, writesModel: info.peftType.isEmpty && info.writes == nil)
        }
    }

    static func megabytes(_ b: Int) -> String { String(format: b >= 10_000_000 ? "%.0f MB" : "%.1f MB", Double(b) / 1e6) }

    static func merges(_ s: Summary) -> String { s.writesModel ? "is a model" : s.fusable ? "yes" : "no" }

    /// The table as text (also the README's): test accuracy (%) per task and on average, then the run figures.
    public func table(_ runs: [Run]) -> String {
        let sums = summaries(runs), names = tasks.map(\.name)
        var rows = [["method"] + names + ["mean", "trainable", "tokens/s", "peak memory", "file", "fuse/merge"]]
        for s in sums {
            rows.append([s.method] + names.map { s.accuracy[$0].map { String(format: "%.2f", $0 * 100) } ?? "–" }
                        + [String(format: "%.2f", s.meanAccuracy * 100), String(s.trainableParameters),
                           s.tokensPerSecond.map { String(format: "%.0f", $0) } ?? "–", Self.megabytes(s.peakMemoryBytes),
                           Self.megabytes(s.outputBytes), Self.merges(s)])
        }
        let widths = rows[0].indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { r in
            r.enumerated().map { c, v in c == 0 ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                : String(repeating: " ", count: widths[c] - v.count) + v }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    public func json(_ runs: [Run]) -> JSONValue {
        .object([
            ("model", .string(model)), ("tasks", .array(tasks.map { .string($0.name) })),
            ("settings", .object([("epochs", .int(Int64(epochs))), ("batch_size", .int(Int64(batchSize))), ("max_length", .int(Int64(maxLength))),
                                  ("warmup_ratio", .double(warmupRatio)), ("seed", .int(Int64(seed))), ("precision", .string(precision)),
                                  ("learning_rates", .object(methods.map { ($0, .double(learningRate($0))) }))])),
            ("runs", .array(runs.map { r in
                .object([("method", .string(r.method)), ("task", .string(r.task)), ("test_accuracy", .double(r.testAccuracy)),
                         ("trainable_parameters", .int(Int64(r.trainableParameters))), ("tokens_per_second", r.tokensPerSecond.map { .double($0) } ?? .null),
                         ("peak_memory_bytes", .int(Int64(r.peakMemoryBytes))), ("output_bytes", .int(Int64(r.outputBytes))), ("seconds", .double(r.seconds))])
            })),
        ])
    }

    /// The report page in the demo's style: the table and a grouped-bar chart of test accuracy (SVG inline).
    public func html(_ runs: [Run]) -> String {
        let e = Charts.escape, sums = summaries(runs), names = tasks.map(\.name)
        let lowest = runs.map(\.testAccuracy).min() ?? 0
        let chart = Charts.groupedBars(title: "Test accuracy by task and method", categories: names + ["mean"],
                                       series: sums.map { s in (s.method, names.map { s.accuracy[$0].map { $0 * 100 } } + [s.meanAccuracy * 100]) },
                                       yLabel: "test accuracy (%)", yMin: max(0, (lowest * 100 / 10).rounded(.down) * 10 - 10), yMax: 100)
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>Graft: adapter methods compared</title>
        <style>
        body { font-family: sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
        table { border-collapse: collapse; margin: 1em 0; } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; }
        td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; } code { background: #f4f4f4; padding: 1px 4px; }
        svg { max-width: 100%; height: auto; }
        </style></head><body>
        <h1>Adapter methods on \(names.count) tasks</h1>
        <p>Base model <code>\(e(model))</code>. Every method trained on every task with the same data, \(epochs) epoch(s), batch
        \(batchSize), sequences up to \(maxLength) tokens, \(Int(warmupRatio * 100)) % warm-up then linear decay, seed \(seed); each with
        its own learning rate (\(e(methods.map { "\($0) \(learningRate($0))" }.joined(separator: ", ")))). Test accuracy in %.</p>
        \(chart)
        <table><tr><th>method</th>
        """
        for n in names { h += "<th class=\"n\">\(e(n))</th>" }
        h += "<th class=\"n\">mean</th><th class=\"n\">trainable</th><th class=\"n\">tokens/s</th><th class=\"n\">peak memory</th><th class=\"n\">file</th><th>fuse / merge</th></tr>\n"
        for s in sums {
            h += "<tr><td>\(e(s.method))</td>"
            for n in names { h += "<td class=\"n\">\(s.accuracy[n].map { String(format: "%.2f", $0 * 100) } ?? "–")</td>" }
            h += "<td class=\"n\">\(String(format: "%.2f", s.meanAccuracy * 100))</td><td class=\"n\">\(s.trainableParameters)</td>"
            h += "<td class=\"n\">\(s.tokensPerSecond.map { String(format: "%.0f", $0) } ?? "–")</td><td class=\"n\">\(Self.megabytes(s.peakMemoryBytes))</td>"
            h += "<td class=\"n\">\(Self.megabytes(s.outputBytes))</td><td>\(Self.merges(s))</td></tr>\n"
        }
        h += "</table>\n<p>Trainable parameters, peak memory and file size: the largest over the tasks (the heads differ by class count); tokens/s: the mean.</p>\n</body></html>\n"
        return h
    }
}
