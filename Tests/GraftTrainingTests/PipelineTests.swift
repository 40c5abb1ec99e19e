import Foundation
import GraftEval
import GraftFormats
@testable import GraftPipeline
import GraftTensor
import GraftTraining
import XCTest
import GraftTestSupport

/// The multi-task pipeline (`graft demo`) on two small tasks: it trains, merges, reports, reuses its
/// cache, and its numbers are what `graft eval` gives for the same merged model.
final class PipelineTests: XCTestCase {
    /// A second toy task with its own vocabulary: sports or cooking.
    func toyTopic(_ n: Int) -> String {
        let sport = ["the team won the match", "a late goal decided the game", "the striker scored twice", "the coach praised the defence"]
        let food = ["stir the soup and add salt", "bake the bread for an hour", "chop the onions finely", "simmer the sauce gently"]
        return (0..<n).map { i -> String in
            let s = i % 2 == 0
            return "{\"text\": \"\((s ? sport : food)[(i / 2) % 4]) \(i)\", \"label\": \"\(s ? "sport" : "cooking")\"}"
        }.joined(separator: "\n") + "\n"
    }

    func spec(_ d: String) throws -> MultiTaskSpec {
        for (name, text) in [("sentiment", toySentiment(64)), ("topic", toyTopic(64))] {
            let lines = text.split(separator: "\n").map(String.init)
            try FileManager.default.createDirectory(atPath: d + "/" + name, withIntermediateDirectories: true)
            try write(lines[0..<40].joined(separator: "\n") + "\n", to: d + "/\(name)/train.jsonl")
            try write(lines[40..<52].joined(separator: "\n") + "\n", to: d + "/\(name)/validation.jsonl")
            try write(lines[52..<64].joined(separator: "\n") + "\n", to: d + "/\(name)/test.jsonl")
        }
        var s = MultiTaskSpec(model: try fetchedModel("minilm"), tasks: [PipelineTask(name: "sentiment", folder: d + "/sentiment"),
                                                                         PipelineTask(name: "topic", folder: d + "/topic")],
                              workDir: d + "/work", bf16: BF16Matrix.hardwareAccelerated)
        s.lora = .init(rank: 4, alpha: 8, targetModules: ["query", "value"])
        s.trainer.epochs = 2; s.trainer.batchSize = 8; s.trainer.learningRate = 2e-3
        s.probe.epochs = 5; s.probe.batchSize = 8
        s.maxLength = 32
        s.checkpointEvery = 4
        s.methods = [MergeCandidate(method: "task_arithmetic", label: "TA", grid: [0.5, 1.0], globals: [("normalize", "false")], perModel: [("weight", "1.0")]),
                     MergeCandidate(method: "opcm", label: "OPCM", grid: [1.0, 2.0], globals: [("alpha", "0.5")])]
        return s
    }

    func testPipelineTrainsMergesReportsAndReusesItsCache() throws {
        let d = try temporaryDirectory(self)
        let s = try spec(d)
        var trainingEvents = 0
        let first = try MultiTaskPipeline(s) { if case .training = $0 { trainingEvents += 1 } }.run()
        XCTAssertGreaterThan(trainingEvents, 0)
        XCTAssertEqual(first.tasks.map(\.name), ["sentiment", "topic"])
        for t in first.tasks {
            XCTAssertGreaterThanOrEqual(t.individual.test.accuracy, 0.9, "\(t.name): the toy tasks are learnable")
            XCTAssertEqual(t.individual.test.examples, 12)
        }
        XCTAssertEqual(first.methods.map(\.candidate.method), ["task_arithmetic", "opcm"])
        for m in first.methods {
            XCTAssertEqual(m.grid.map(\.scale), m.candidate.grid)
            let best = m.grid.map { m.meanValidation($0.scale, tasks: ["sentiment", "topic"]) }.max()!
            XCTAssertEqual(m.meanValidation(m.chosenScale, tasks: ["sentiment", "topic"]), best, "\(m.candidate.method): the kept scale is the best on validation")
            XCTAssertTrue(FileManager.default.fileExists(atPath: m.configPath))
            // The report's numbers are graft eval's on the kept merged model, each task with its own head.
            for t in s.tasks {
                let ev = try Evaluation.classification(model: m.modelPath, adapter: s.adapterPath(t), headOnly: true, bf16: s.bf16,
                                                       data: t.split("test"), header: true, textColumn: "text", labelColumn: nil, maxLength: 32)
                XCTAssertEqual(ev.metrics.accuracy, m.test[t.name]?.accuracy, "\(m.candidate.method) on \(t.name)")
                XCTAssertEqual(ev.metrics.macroF1, m.test[t.name]?.macroF1)
            }
        }
        // The same through the command line.
        let ta = first.methods[0], topic = s.tasks[1]
        let (code, out, err) = try runGraft(Self.self, ["eval", "--model", ta.modelPath, "--adapter", s.adapterPath(topic), "--head-only",
                                                        "--data", topic.split("test"), "--max-length", "32", "--json"] + (s.bf16 ? [] : ["--precision", "f32"]))
        XCTAssertEqual(code, 0, err)
        XCTAssertEqual(try JSONValue.parse([UInt8](out.utf8))["accuracy"]?.doubleValue, ta.test["topic"]?.accuracy)

        // Report: table, JSON and a self-contained HTML page.
        let files = try PipelineReport.write(first, to: d)
        let html = try String(contentsOfFile: files.html, encoding: .utf8)
        XCTAssertTrue(html.contains("<svg") && html.contains("OPCM"), "inline SVG charts")
        XCTAssertFalse(html.contains("<script") || html.contains("src=") || html.contains("href="), "nothing fetched")
        let table = PipelineReport.table(first)
        XCTAssertTrue(table.contains("sentiment") && table.contains("normalized avg") && table.contains("TA"), table)
        let json = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: files.json))))
        XCTAssertEqual(json["methods"]?.arrayValue?.count, 2)

        // A rerun trains nothing and gives the same numbers.
        trainingEvents = 0
        let again = try MultiTaskPipeline(s) { if case .training = $0 { trainingEvents += 1 } }.run()
        XCTAssertEqual(trainingEvents, 0, "everything was cached")
        XCTAssertEqual(PipelineReport.json(again)["methods"]?.serialized(), PipelineReport.json(first)["methods"]?.serialized())

        // Interrupted mid-way: an adapter lost (its checkpoints kept), a score file cut short. The rerun
        // resumes the adapter from its checkpoint, redoes every later step, and lands on the same numbers.
        let fm = FileManager.default
        try fm.removeItem(atPath: s.adapterPath(s.tasks[0]))
        XCTAssertFalse(Checkpoints.list(in: s.adapterPath(s.tasks[0]) + ".checkpoints").isEmpty)
        try write("{\"sentiment\": {\"accur", to: s.path("scores", "opcm-lambda-1.validation.json"))
        var resumed = false
        let third = try MultiTaskPipeline(s) { if case .training(.resumed) = $0 { resumed = true } }.run()
        XCTAssertTrue(resumed, "the adapter continued from its checkpoint")
        XCTAssertEqual(PipelineReport.json(third)["methods"]?.serialized(), PipelineReport.json(first)["methods"]?.serialized())
    }

    func testAWorkFolderFromOtherSettingsIsRefused() throws {
        let d = try temporaryDirectory(self)
        var s = try spec(d)
        try MultiTaskPipeline(s) { _ in }.prepareWorkDir()
        s.trainer.epochs = 3
        XCTAssertThrowsError(try MultiTaskPipeline(s) { _ in }.prepareWorkDir()) {
            XCTAssertTrue("\($0)".contains("trainer.epochs: 2 before, 3 now"), "\($0)")
        }
        // --fresh deletes only a folder the demo made.
        try FileManager.default.createDirectory(atPath: d + "/mine", withIntermediateDirectories: true)
        try write("keep me", to: d + "/mine/notes.txt")
        let (code, _, err) = try runGraft(Self.self, ["demo", "--fresh", "--work-dir", d + "/mine"])
        XCTAssertNotEqual(code, 0)
        XCTAssertTrue(err.contains("not a graft demo work folder"), err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: d + "/mine/notes.txt"))
        // Missing splits are named.
        try FileManager.default.removeItem(atPath: d + "/topic/test.jsonl")
        XCTAssertThrowsError(try MultiTaskPipeline(s) { _ in }.run()) {
            XCTAssertTrue("\($0)".contains("topic/test.jsonl: missing"), "\($0)")
        }
    }
}
