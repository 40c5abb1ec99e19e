import Foundation
import GraftEval
import GraftFormats
import GraftTraining

/// The run's report: a terminal table, a JSON file and a self-contained HTML page with SVG charts.
public enum PipelineReport {
    static func pct(_ v: Double) -> String { v.isFinite ? String(format: "%.2f", v * 100) : "–" }

    /// Test accuracy (%) per task for the probe, each task's own adapter and every kept merge, then the
    /// means, the normalised means (merged / own adapter) and the scale each merge kept.
    public static func table(_ r: PipelineResult) -> String {
        let cols = ["probe", "own adapter"] + r.methods.map(\.candidate.label)
        var rows: [[String]] = []
        for t in r.tasks {
            rows.append([t.name, pct(t.probe.test.accuracy), pct(t.individual.test.accuracy)] + r.methods.map { pct($0.test[t.name]?.accuracy ?? .nan) })
        }
        rows.append(["average", pct(r.meanProbe), pct(r.meanIndividual)] + r.methods.map { pct(r.meanTest($0)) })
        rows.append(["normalized avg", pct(r.meanProbe / r.meanIndividual), "100.00"] + r.methods.map { pct(r.meanNormalized($0)) })
        rows.append(["scale kept", "", ""] + r.methods.map { "\($0.candidate.scaleParameter)=\(MergeCandidate.format($0.chosenScale))" })
        let header = ["test accuracy %"] + cols
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max()! }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0) : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
        }
        var out = line(header) + "\n" + widths.map { String(repeating: "─", count: $0) }.joined(separator: "  ") + "\n"
        for (i, row) in rows.enumerated() {
            if i == r.tasks.count { out += widths.map { String(repeating: "─", count: $0) }.joined(separator: "  ") + "\n" }
            out += line(row) + "\n"
        }
        return out
    }

    /// One sentence: which merge won (on validation) and how it compares with the floor and the adapters.
    public static func verdict(_ r: PipelineResult) -> String {
        guard let w = r.winner else { return "no merge ran" }
        return String(format: "best merge on validation: %@ (%@ = %@): %@%% mean test accuracy, %@%% of the separate adapters' (%@%%); linear-probe floor %@%%",
                      w.candidate.label, w.candidate.scaleParameter, MergeCandidate.format(w.chosenScale), pct(r.meanTest(w)),
                      pct(r.meanNormalized(w)), pct(r.meanIndividual), pct(r.meanProbe))
    }

    public static func json(_ r: PipelineResult) -> JSONValue {
        func scores(_ s: [String: TaskScore]) -> JSONValue { .object(r.tasks.compactMap { t in s[t.name].map { (t.name, $0.json) } }) }
        return .object([
            ("model", .string(r.model)), ("work_dir", .string(r.workDir)), ("seed", .int(Int64(r.seed))), ("max_length", .int(Int64(r.maxLength))),
            ("tasks", .array(r.tasks.map { t in
                .object([("name", .string(t.name)), ("labels", .array(t.labels.map { .string($0) })),
                         ("examples", .object([("train", .int(Int64(t.trainExamples))), ("validation", .int(Int64(t.validationExamples))),
                                               ("test", .int(Int64(t.testExamples)))])),
                         ("adapter", .object([("path", .string(t.adapterPath)), ("validation", t.individual.validation.json), ("test", t.individual.test.json)])),
                         ("probe", .object([("path", .string(t.probePath)), ("validation", t.probe.validation.json), ("test", t.probe.test.json)]))])
            })),
            ("methods", .array(r.methods.map { m in
                .object([("method", .string(m.candidate.method)), ("label", .string(m.candidate.label)),
                         ("scale_parameter", .string(m.candidate.scaleParameter)),
                         ("grid", .array(m.grid.map { g in
                             .object([("scale", .double(g.scale)), ("mean_validation_accuracy", .double(m.meanValidation(g.scale, tasks: r.taskNames))),
                                      ("validation", scores(g.validation))])
                         })),
                         ("chosen_scale", .double(m.chosenScale)), ("model", .string(m.modelPath)), ("config", .string(m.configPath)),
                         ("test", scores(m.test)),
                         ("normalized_test_accuracy", .object(r.tasks.map { t in
                             (t.name, .double((m.test[t.name]?.accuracy ?? .nan) / t.individual.test.accuracy))
                         })),
                         ("mean_test_accuracy", .double(r.meanTest(m))),
                         ("mean_normalized_accuracy", .double(r.meanNormalized(m)))])
            })),
            ("mean_test_accuracy", .object([("probe", .double(r.meanProbe)), ("adapters", .double(r.meanIndividual))])),
            ("winner", r.winner.map { .string($0.candidate.method) } ?? .null),
            ("stage_seconds", .array(r.stageSeconds.map { .object([("stage", .string($0.stage)), ("seconds", .double($0.seconds))]) })),
        ])
    }

    public static func html(_ r: PipelineResult) -> String {
        let e = Charts.escape
        let names = r.tasks.map(\.name)
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>Graft multi-task merge report</title>
        <style>
        body { font-family: sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
        table { border-collapse: collapse; margin: 1em 0; } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; }
        td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; } tr.sum td { font-weight: bold; }
        .win { background: #eef6ee; } code { background: #f4f4f4; padding: 1px 4px; } svg { max-width: 100%; height: auto; }
        .curves { display: flex; flex-wrap: wrap; gap: 8px; } .curves svg { width: 470px; }
        </style></head><body>
        <h1>One model, \(r.tasks.count) tasks</h1>
        <p>Base model <code>\(e(r.model))</code>; one LoRA adapter with a classification head trained per task, merged into one
        model by each method below (heads stay per task); each method's scale was chosen on the validation splits, and the
        numbers are test accuracy. Seed \(r.seed), sequences up to \(r.maxLength) tokens.</p>
        <p><b>\(e(verdict(r)))</b></p>
        <h2>Test accuracy (%)</h2>
        <table><tr><th>task</th><th class="n">probe</th><th class="n">own adapter</th>
        """
        let win = r.winner?.candidate.method
        for m in r.methods { h += "<th class=\"n\(m.candidate.method == win ? " win" : "")\">\(e(m.candidate.label))</th>" }
        h += "</tr>\n"
        func row(_ label: String, _ cells: [String], sum: Bool = false) -> String {
            "<tr\(sum ? " class=\"sum\"" : "")><td>\(e(label))</td>" + cells.enumerated().map { i, c in
                let method = i >= 2 ? r.methods[i - 2].candidate.method : ""
                return "<td class=\"n\(method == win && !method.isEmpty ? " win" : "")\">\(e(c))</td>"
            }.joined() + "</tr>\n"
        }
        for t in r.tasks {
            h += row(t.name, [pct(t.probe.test.accuracy), pct(t.individual.test.accuracy)] + r.methods.map { pct($0.test[t.name]?.accuracy ?? .nan) })
        }
        h += row("average", [pct(r.meanProbe), pct(r.meanIndividual)] + r.methods.map { pct(r.meanTest($0)) }, sum: true)
        h += row("normalized average", [pct(r.meanProbe / r.meanIndividual), "100.00"] + r.methods.map { pct(r.meanNormalized($0)) }, sum: true)
        h += row("scale kept", ["", ""] + r.methods.map { "\($0.candidate.scaleParameter) = \(MergeCandidate.format($0.chosenScale))" })
        h += "</table>\n"
        let series: [(name: String, values: [Double?])] = [("linear probe", r.tasks.map { $0.probe.test.accuracy * 100 }),
                                                           ("own adapter", r.tasks.map { $0.individual.test.accuracy * 100 })]
            + r.methods.map { m in (m.candidate.label, r.tasks.map { t in m.test[t.name].map { $0.accuracy * 100 } }) }
        let lows = series.flatMap { $0.values.compactMap { $0 } }
        let yMin = max(0, ((lows.min() ?? 0) / 10).rounded(.down) * 10 - 10)
        // The probe and the adapters take the first two colours; each method keeps its colour in both charts.
        let colors = Charts.palette
        h += Charts.groupedBars(title: "Test accuracy per task", categories: names + ["average"],
                                series: series.map { s in (s.name, s.values + [s.values.compactMap { $0 }.reduce(0, +) / Double(max(1, s.values.count))]) },
                                yLabel: "accuracy (%)", yMin: yMin, yMax: 100, colors: colors)
        h += "<h2>Choosing the scale on validation</h2>\n"
        h += Charts.lines(title: "Mean validation accuracy over the scale grid", series: r.methods.map { m in
            (m.candidate.label, m.grid.map { (x: $0.scale, y: m.meanValidation($0.scale, tasks: names) * 100) })
        }, xLabel: "scale (" + Set(r.methods.map(\.candidate.scaleParameter)).sorted().joined(separator: " / ") + ")",
           yLabel: "mean validation accuracy (%)", colors: Array(colors.dropFirst(2)))
        h += "<h2>Training loss of each adapter</h2>\n<div class=\"curves\">\n"
        for t in r.tasks { h += LossCurve.svg(t.history, title: "\(t.name): LoRA training loss (line) and validation loss (points)") }
        h += "</div>\n<h2>Reproduce one number</h2>\n"
        if let w = r.winner, let t = r.tasks.first {
            h += "<p>The merged models are ordinary HF folders; any cell above is what <code>graft eval</code> prints, e.g.</p>\n"
            h += "<pre>graft eval --model \(e(w.modelPath)) --adapter \(e(t.adapterPath)) --head-only --max-length \(r.maxLength) \\\n    --data \(e((t.dataFolder as NSString).appendingPathComponent("test.jsonl")))</pre>\n"
            h += "<p>and <code>graft merge\(w.candidate.isContinual ? " --continual" : "") \(e(w.configPath)) OUT/</code> rebuilds the merge.</p>\n"
        }
        h += "<h2>Time</h2>\n<p>Wall time of the run that wrote this page; steps it reused from the work folder took none.</p>\n<table>" + r.stageSeconds.map { "<tr><td>\(e($0.stage))</td><td class=\"n\">\(String(format: "%.0f s", $0.seconds))</td></tr>" }.joined() + "</table>\n"
        return h + "</body></html>\n"
    }

    /// Writes report.json and report.html into `directory` (each replaced whole).
    public static func write(_ r: PipelineResult, to directory: String) throws -> (json: String, html: String) {
        let j = (directory as NSString).appendingPathComponent("report.json"), p = (directory as NSString).appendingPathComponent("report.html")
        try DurableFile.write(json(r).serialized(pretty: true) + "\n", to: j)
        try DurableFile.write(html(r), to: p)
        return (j, p)
    }
}
