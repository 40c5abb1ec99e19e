import ArgumentParser
import Foundation
import GraftAdapters
import GraftData
import GraftFormats
import GraftModels
import GraftPipeline

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Train every adapter method on every task with the same data, budget and seed, and compare them.",
        discussion: """
        For each method and task: graft train (one process per run) with the same splits, epochs, batch size,
        sequence length, warm-up and seed, each method at its own learning rate; then one table: test accuracy
        per task and on average, trainable parameters, training tokens/s, peak memory, the size of what it
        writes, and whether it folds into the weights (graft fuse) and so merges. Written to WORK/comparison.json
        and WORK/comparison.html (an SVG chart; opens offline). Finished runs are reused when run again.

        Learning rates (override with --lr METHOD=VALUE): \(MethodComparison.learningRates.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")).

        Examples:
          graft compare --methods lora,ia3,prompt --tasks sentiment,topic
          graft compare --methods lora,dora,ia3,vera,prompt,prefix,full        # the demo's four tasks
          graft compare --methods lora,full --task tickets=data/tickets --task reviews=data/reviews --epochs 3
        """)

    @Option(help: "Methods, comma-separated (graft train --list-methods describes them).") var methods: String
    @Option(help: "Base model: a BERT-style HF folder or a fetched short name.") var model = "minilm"
    @Option(help: "Built-in tasks, comma-separated, from: \(Prepare.corpora.map(\.name).joined(separator: ", ")) (default: all four, unless --task is given).") var tasks: String?
    @Option(name: .customLong("task"), help: ArgumentHelp("Your own task: NAME=FOLDER with train.jsonl, validation.jsonl and test.jsonl ({\"text\", \"label\"} rows). Repeat for each task.", valueName: "name=folder")) var customTasks: [String] = []
    @Option(help: "Work folder (default: $GRAFT_HOME/compare).") var workDir: String?
    @Option(help: "Epochs of every run (default 1).") var epochs = 1
    @Option(help: "Examples per batch (default 32).") var batchSize = 32
    @Option(help: "Longest sequence in tokens (default 128).") var maxLength = 128
    @Option(help: "Seed of initialisation, data order and dropout.") var seed: UInt64 = 42
    @Option(help: "auto | bf16 | f32, for every run.") var precision = "auto"
    @Option(name: .customLong("lr"), help: ArgumentHelp("A method's learning rate instead of its default: METHOD=VALUE. Repeat for each.", valueName: "method=lr")) var learningRates: [String] = []
    @Flag(help: "Print the comparison JSON on standard output.") var json = false

    var methodList: [String] { methods.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty } }

    var taskNames: [String] {
        if let tasks { return tasks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        return customTasks.isEmpty ? Prepare.corpora.map(\.name) : []
    }

    func overrides() throws -> [String: Double] {
        var out: [String: Double] = [:]
        for s in learningRates {
            let parts = s.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let v = Double(parts[1]), v > 0 else { throw ValidationError("--lr '\(s)': expected METHOD=VALUE with a positive value") }
            guard methodList.contains(parts[0]) else { throw ValidationError("--lr '\(s)': \(parts[0]) is not among --methods") }
            out[parts[0]] = v
        }
        return out
    }

    func validate() throws {
        _ = try usesBF16(precision: precision)
        guard !methodList.isEmpty else { throw ValidationError("--methods: give at least one method") }
        for m in methodList {
            do { _ = try AdapterMethods.named(m) } catch { throw ValidationError("\(error)") }
        }
        guard Set(methodList).count == methodList.count else { throw ValidationError("--methods lists a method twice") }
        guard epochs >= 1, batchSize >= 1, maxLength >= 8 else { throw ValidationError("--epochs and --batch-size must be at least 1, --max-length at least 8") }
        for t in taskNames where !Prepare.corpora.contains(where: { $0.name == t }) {
            throw ValidationError("unknown task '\(t)' (known: \(Prepare.corpora.map(\.name).joined(separator: ", ")); your own data goes in --task NAME=FOLDER)")
        }
        let all = taskNames + (try DemoCommand.parseTasks(customTasks)).map(\.name)
        guard !all.isEmpty else { throw ValidationError("no tasks (--tasks, --task)") }
        guard Set(all).count == all.count else { throw ValidationError("task names must be unique (got \(all.joined(separator: ", ")))") }
        _ = try overrides()
    }

    func run() throws {
        let start = Date()
        var pipelineTasks = try taskNames.map { PipelineTask(name: $0, folder: try DemoCommand.prepare($0)) }
        pipelineTasks += try DemoCommand.parseTasks(customTasks)
        var c = MethodComparison(model: try ModelLocator.resolve(model), tasks: pipelineTasks, methods: methodList,
                                 workDir: workDir ?? GraftHome.path + "/compare")
        c.epochs = epochs; c.batchSize = batchSize; c.maxLength = maxLength; c.seed = seed; c.precision = precision
        c.learningRateOverrides = try overrides()
        guard let exe = Bundle.main.executablePath else { throw ValidationError("cannot find the graft executable to run the trainings") }
        let runs = try c.run(executable: exe) { printErr($0) }
        try FileManager.default.createDirectory(atPath: c.workDir, withIntermediateDirectories: true)
        let jsonPath = c.workDir + "/comparison.json", htmlPath = c.workDir + "/comparison.html"
        try DurableFile.write(c.json(runs).serialized(pretty: true) + "\n", to: jsonPath)
        try DurableFile.write(c.html(runs), to: htmlPath)
        if json { print(c.json(runs).serialized(pretty: true)) } else { print("test accuracy (%)\n" + c.table(runs), terminator: "") }
        printErr("report: \(htmlPath) (and \(jsonPath)); finished in \(String(format: "%.0f", Date().timeIntervalSince(start))) s")
    }
}
