import ArgumentParser
import Foundation
import GraftMerging

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge fine-tunes of one base model, from a mergekit YAML config.",
        discussion: """
        The config is the one mergekit takes:

          merge_method: ties
          base_model: path/to/base
          dtype: float32
          parameters:
            normalize: true
          models:
            - model: path/to/finetune-a
              parameters: {weight: 1.0, density: 0.3}
            - model: path/to/finetune-b+path/to/lora   # LoRA applied first
              parameters:
                weight: [0.2, 0.8]                     # gradient over layers
                density: [{filter: mlp, value: 0.5}, {value: 0.3}]

        Relative model paths resolve against the working directory, then the config's folder. Tensors are streamed one name at a time, so memory stays near (models + 1) × the largest tensor. The output folder appears only when complete: an error or Ctrl-C leaves nothing behind.

        Methods: linear, task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, slerp and model_stock (mergekit's semantics); pcb and tsv (research methods). With --continual and merge_method: opcm, models are merged one at a time by orthogonal projection. `graft merge --list-methods` lists every method's parameters.
        """)

    @Argument(help: "The mergekit YAML config.")
    var config: String?

    @Argument(help: "Output model folder.")
    var output: String?

    @Flag(help: "Check the config, files, tensor names and shapes without writing anything.")
    var dryRun = false

    @Flag(help: "Replace the output folder if it exists.")
    var force = false

    @Flag(help: "Merge even if an input holds NaN or infinite values.")
    var allowNonfinite = false

    @Option(help: "Seed for the random methods (dare_linear, dare_ties).")
    var seed: UInt64 = 0

    @Option(help: "Largest output shard, e.g. 5GB, 500MB.")
    var maxShardSize: String = "5GB"

    @Flag(help: "Do not copy tokenizer files into the output.")
    var noTokenizer = false

    @Flag(help: "Continual merging (OPCM): add the config's models one at a time, in order, by orthogonal projection.")
    var continual = false

    @Option(help: "With --continual: folder keeping the running merge state; rerun with more models to add them.")
    var state: String?

    @Flag(help: "List the merge methods and their parameters, then exit.")
    var listMethods = false

    func validate() throws {
        if listMethods { return }
        guard config != nil else { throw ValidationError("missing the config file (graft merge CONFIG OUTPUT)") }
        guard output != nil || dryRun else { throw ValidationError("missing the output folder (graft merge CONFIG OUTPUT)") }
        guard parseSize(maxShardSize) != nil else { throw ValidationError("--max-shard-size: cannot read '\(maxShardSize)' (e.g. 5GB, 500MB)") }
        if state != nil && !continual { throw ValidationError("--state is used with --continual") }
    }

    func run() throws {
        if listMethods {
            for m in MergeMethods.all.map({ $0 as any MethodDescription }) + [ContinualMerge.descriptor] {
                print("\(m.name)\n  \(m.summary)")
                for p in m.parameters {
                    let def = p.defaultValue.map { "default \($0)" } ?? "required"
                    let scope = p.scope == .global ? "global" : "per model"
                    print("    \(p.name) (\(scope), \(def)\(p.range.map { ", in \($0)" } ?? "")): \(p.help)")
                }
            }
            return
        }
        let cfg = try MergeConfig.load(path: config!)
        var options = MergeOptions()
        options.overwrite = force
        options.allowNonFinite = allowNonfinite
        options.seed = seed
        options.maxShardBytes = parseSize(maxShardSize)!
        options.copyTokenizer = !noTokenizer
        if continual {
            let plan = try ContinualMerge.Plan(config: cfg)
            printErr("continual merge (\(ContinualMerge.descriptor.name)): \(plan.models.count) model(s) onto \(cfg.baseModel?.name ?? "?"), \(plan.tensorCount) tensors")
            if dryRun { printErr("dry run: config, files, names and shapes are consistent; nothing written"); return }
            let summary = try ContinualMerge.run(plan, to: output!, statePath: state, options: options) { step, total, name, p in
                if p.tensorsDone == 1 { printErr("[\(step)/\(total)] adding \(name)") }
                bar.update(p)
            }
            printErr(String(format: "merged %d model(s) in %.1fs → %@", summary.tensors, summary.seconds, summary.outputPath))
            return
        }
        let plan = try MergePlan(config: cfg)
        printErr("\(plan.method.name): \(plan.inputs.count) model(s)\(plan.base.map { " onto base \($0.reference.name)" } ?? ""), \(plan.items.count) tensors, \(formatBytes(plan.outputBytes)) out")
        if dryRun {
            printErr("dry run: config, files, names, shapes and parameters are consistent; nothing written")
            return
        }
        let summary = try MergeExecutor.run(plan, to: output!, options: options) { bar.update($0) }
        printErr(String(format: "wrote %d tensors (%@) in %.2fs → %@", summary.tensors, formatBytes(summary.bytesWritten),
                        summary.seconds, summary.outputPath))
    }

    private var bar: ProgressBar { Self.sharedBar }
    private static let sharedBar = ProgressBar("merge")
}

/// "5GB", "500MB", "1.5G", "1000000" → bytes (decimal units, as mergekit's --max-shard-size).
func parseSize(_ s: String) -> Int? {
    let t = s.trimmingCharacters(in: .whitespaces).uppercased()
    let units: [(String, Double)] = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3), ("B", 1)]
    for (u, f) in units where t.hasSuffix(u) {
        guard let v = Double(t.dropLast(u.count)), v > 0 else { return nil }
        return Int(v * f)
    }
    guard let v = Int(t), v > 0 else { return nil }
    return v
}
