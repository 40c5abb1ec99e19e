import ArgumentParser
import Foundation
import GraftData
import GraftFormats
import GraftModels
import GraftPipeline
import GraftTensor
import GraftTraining

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "The main job end to end: adapt MiniLM to four tasks, merge them into one model, report which merge to keep.",
        discussion: """
        Steps (each cached in the work folder; a rerun, e.g. after Ctrl-C, reuses what finished):
          0. prepare the four corpora (fetched by scripts/fetch-data) into
             seeded, stratified train/validation/test splits
          1. train a linear probe per task (a head on the frozen base): the floor
          2. train one LoRA adapter per task, its classification head starting
             from the probe's (LP-FT)
          3. score each adapter and probe on its own task
          4. merge the four task updates (adapters folded into task vectors;
             heads stay per task) with Task Arithmetic, TIES, Breadcrumbs, PCB,
             TSV-M and continual OPCM, each over a small scale grid scored on
             the validation splits
          5. score each method's kept merge on every task's test split with
             that task's head
        Then prints the table and writes WORK/report.json and WORK/report.html
        (SVG charts; opens offline).

        make demo runs the set-up first (build, scripts/fetch-models minilm,
        scripts/fetch-data). Each step is also a command of its own:
        graft data prepare, graft train --targets none, graft train --init-head,
        graft merge WORK/merges/METHOD/SCALE.yml OUT, graft eval --head-only.

        Examples:
          graft demo
          graft demo --tasks sentiment,topic --work-dir /tmp/two-tasks
          graft demo --model my-bert/ --task tickets=data/tickets
                     --task reviews=data/reviews --work-dir runs/mine
          graft demo --fresh             # start over (deletes the work folder)
        """)

    @Option(help: "Base model: a BERT-style HF folder or a fetched short name.") var model = "minilm"
    @Option(help: "Built-in tasks, comma-separated, from: \(Prepare.corpora.map(\.name).joined(separator: ", ")) (default: all four, unless --task is given).") var tasks: String?
    @Option(name: .customLong("task"), help: ArgumentHelp("Your own task: NAME=FOLDER, a folder with train.jsonl, validation.jsonl and test.jsonl ({\"text\", \"label\"} rows; graft data prepare writes them). Repeat for each task.", valueName: "name=folder")) var customTasks: [String] = []
    @Option(help: "Work folder (default: $GRAFT_HOME/demo).") var workDir: String?
    @Option(help: "LoRA training epochs for every task (default: 2 for sentiment, hedging and your own tasks, 1 for topic and dutch-sentiment).") var epochs: Int?
    @Option(help: "Seed of initialisation, data order and dropout (the built-in corpora are split once, with graft data prepare's seed 42).") var seed: UInt64 = 42
    @Option(help: "auto | bf16 | f32: precision of the products with the frozen weights in training and scoring (auto: bf16 where the CPU has AVX512-BF16 and bf16 products measured faster than float32; graft doctor shows the choice).") var precision = "auto"
    @Flag(help: "Delete the work folder first and redo every step.") var fresh = false
    @Flag(help: "Print the report JSON on standard output.") var json = false

    static let defaultEpochs = ["sentiment": 2, "hedging": 2, "dutch-sentiment": 1, "topic": 1]

    func validate() throws {
        _ = try usesBF16(precision: precision)
        if let e = epochs, e < 1 { throw ValidationError("--epochs must be at least 1") }
        for t in taskNames where !Prepare.corpora.contains(where: { $0.name == t }) {
            throw ValidationError("unknown task '\(t)' (known: \(Prepare.corpora.map(\.name).joined(separator: ", ")); your own data goes in --task NAME=FOLDER)")
        }
        let custom = try parsedCustomTasks()
        guard taskNames.count + custom.count >= 2 else { throw ValidationError("merging needs two or more tasks (--tasks, --task)") }
        let all = taskNames + custom.map(\.name)
        guard Set(all).count == all.count else { throw ValidationError("task names must be unique (got \(all.joined(separator: ", ")))") }
    }

    /// Built-in corpora to run: --tasks, else all four unless only custom tasks were given.
    var taskNames: [String] {
        if let tasks { return tasks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        return customTasks.isEmpty ? Prepare.corpora.map(\.name) : []
    }

    func parsedCustomTasks() throws -> [PipelineTask] { try Self.parseTasks(customTasks) }

    /// `--task NAME=FOLDER` values.
    static func parseTasks(_ specs: [String]) throws -> [PipelineTask] {
        try specs.map { s in
            guard let eq = s.firstIndex(of: "="), eq != s.startIndex, s.index(after: eq) != s.endIndex else {
                throw ValidationError("--task '\(s)': expected NAME=FOLDER")
            }
            return PipelineTask(name: String(s[..<eq]), folder: String(s[s.index(after: eq)...]))
        }
    }

    func run() throws {
        let start = Date()
        let modelPath = try ModelLocator.resolve(model)
        let work = workDir ?? GraftHome.path + "/demo"
        if fresh, FileManager.default.fileExists(atPath: work) {
            // Only a folder this command made (it holds pipeline.json) or an empty one is deleted.
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []
            guard entries.isEmpty || FileManager.default.fileExists(atPath: (work as NSString).appendingPathComponent("pipeline.json")) else {
                throw ValidationError("--fresh: \(work) is not a graft demo work folder (no pipeline.json); not deleting it")
            }
            printErr("--fresh: removing \(work)")
            try FileManager.default.removeItem(atPath: work)
        }
        printErr("[0/5] prepare the data")
        var pipelineTasks: [PipelineTask] = []
        for name in taskNames { pipelineTasks.append(PipelineTask(name: name, folder: try Self.prepare(name))) }
        pipelineTasks += try parsedCustomTasks()
        var spec = MultiTaskSpec(model: modelPath, tasks: pipelineTasks, workDir: work,
                                 bf16: try usesBF16(precision: precision), seed: seed)
        for t in pipelineTasks { spec.epochs[t.name] = epochs ?? Self.defaultEpochs[t.name] ?? 2 }
        let bar = TrainProgress()
        let pipeline = MultiTaskPipeline(spec) { event in
            switch event {
            case let .stage(i, n, title): printErr("[\(i)/\(n)] \(title)")
            case let .log(s): printErr("  " + s)
            case let .training(e): bar.handle(e)
            }
        }
        let result = try pipeline.run()
        let files = try PipelineReport.write(result, to: pipeline.spec.workDir)
        if json { print(PipelineReport.json(result).serialized(pretty: true)) } else { print(PipelineReport.table(result), terminator: "") }
        printErr(PipelineReport.verdict(result))
        printErr("report: \(files.html) (and \(files.json)); finished in \(String(format: "%.0f", Date().timeIntervalSince(start))) s")
    }

    /// The corpus's splits in $GRAFT_HOME/data/NAME, prepared now if missing.
    static func prepare(_ name: String) throws -> String {
        let out = GraftHome.path + "/data/" + name
        if FileManager.default.fileExists(atPath: out + "/test.jsonl") { return out }
        guard let c = Prepare.corpora.first(where: { $0.name == name }) else { throw ValidationError("unknown task '\(name)'") }
        let source = c.source(GraftHome.path + "/data/raw")
        let needed: String
        switch source { case let .table(path, _, _, _): needed = path; case let .classFolders(path): needed = path }
        guard FileManager.default.fileExists(atPath: needed) else {
            throw ValidationError("corpus '\(name)' is not fetched (\(needed) is missing): run scripts/fetch-data, or make demo")
        }
        let items = try Prepare.read(source)
        let splits = Prepare.split(items, validation: 0.1, test: 0.1, seed: 42)
        let dir = try OutputDirectory(out, overwrite: true)
        do { try Prepare.write(splits, to: dir.tempPath); try dir.commit() } catch { dir.abandon(); throw error }
        printErr("  \(name): \(splits.train.count) train, \(splits.validation.count) validation, \(splits.test.count) test → \(out)")
        return out
    }
}
