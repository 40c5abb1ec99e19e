import Foundation
import GraftData
import GraftFormats
import GraftText
@testable import GraftTraining
import XCTest
import GraftTestSupport

final class DataTests: XCTestCase {
    func testCSVQuotesNewlinesBOMAndNoHeader() throws {
        let d = try temporaryDirectory(self)
        try write("\u{FEFF}\"1\",\"a \"\"quoted\"\" word\nover two lines\"\r\n\"-1\",plain\n\n-1,last", to: d + "/x.csv")
        let rows = try Table.read(d + "/x.csv", header: false)
        XCTAssertEqual(rows.count, 3)
        XCTAssertEqual(rows[0].text("0"), "1")
        XCTAssertEqual(rows[0].text("1"), "a \"quoted\" word\nover two lines")
        XCTAssertEqual(rows[1].text("1"), "plain")
        XCTAssertEqual(rows[1].line, 3)
        XCTAssertEqual(rows[2].line, 5)
        try write("text,label\nfine,1\ntoo,many,fields\n", to: d + "/bad.csv")
        XCTAssertThrowsError(try Table.read(d + "/bad.csv")) { XCTAssertEqual("\($0)", d + "/bad.csv:3: 3 fields, expected 2 (text, label)") }
        try write("text,label\n\"open,1\n", to: d + "/open.csv")
        XCTAssertThrowsError(try Table.read(d + "/open.csv")) { XCTAssertTrue("\($0)".contains("open.csv:2: unterminated quoted field"), "\($0)") }
    }

    func testJSONLErrorsNameTheLine() throws {
        let d = try temporaryDirectory(self)
        try write("{\"text\": \"a\", \"label\": 1}\n\n{\"text\": \"b\", \"label\": \n[1, 2]\n", to: d + "/x.jsonl")
        XCTAssertThrowsError(try Table.read(d + "/x.jsonl")) { XCTAssertTrue("\($0)".hasPrefix(d + "/x.jsonl:3: invalid JSON"), "\($0)") }
        try write("{\"text\": \"a\"}\n[1, 2]\n", to: d + "/y.jsonl")
        XCTAssertThrowsError(try Table.read(d + "/y.jsonl")) { XCTAssertTrue("\($0)".hasPrefix(d + "/y.jsonl:2: expected a JSON object"), "\($0)") }
        XCTAssertThrowsError(try Table.read(d + "/y.parquet")) { XCTAssertTrue("\($0)".contains("cannot read") || "\($0)".contains("unknown"), "\($0)") }
    }

    func testClassificationSchemaChecksAndSkipping() throws {
        let d = try temporaryDirectory(self)
        try write("{\"text\": \"good\", \"label\": \"pos\"}\n{\"txt\": \"bad\", \"label\": \"neg\"}\n{\"text\": \"meh\", \"label\": \"neg\"}\n", to: d + "/t.jsonl")
        let tok = try TokenizerLoader.load(model: try fetchedModel("minilm"))
        let recs = try Table.read(d + "/t.jsonl")
        let labels = Datasets.labels(recs, column: "label")
        XCTAssertEqual(labels, ["neg", "pos"])
        var report = DataReport()
        XCTAssertThrowsError(try Datasets.classification(recs, tokenizer: tok, labels: labels, options: DataOptions(maxLength: 16), report: &report)) {
            XCTAssertEqual("\($0)", d + "/t.jsonl:2: missing column 'text' (the row has: label, txt)")
        }
        var o = DataOptions(maxLength: 16)
        o.skipBadRows = true
        let ex = try Datasets.classification(recs, tokenizer: tok, labels: labels, options: o, report: &report)
        XCTAssertEqual(ex.map(\.label), [1, 0])
        XCTAssertEqual(report.skipped, 1)
        // A class the training data lacks is an error even when skipping bad rows is off or on: it is not a schema slip.
        XCTAssertThrowsError(try Datasets.classification([recs[2]], tokenizer: tok, labels: ["pos", "other"], options: DataOptions(maxLength: 16), report: &report)) {
            XCTAssertEqual("\($0)", d + "/t.jsonl:3: label 'neg' is not one of the training data's classes (pos, other)")
        }
    }

    func testTruncationOrError() throws {
        let d = try temporaryDirectory(self)
        try write("{\"text\": \"one two three four five six seven eight\", \"label\": 1}\n", to: d + "/t.jsonl")
        let tok = try TokenizerLoader.load(model: try fetchedModel("minilm"))
        let recs = try Table.read(d + "/t.jsonl")
        var report = DataReport()
        let ex = try Datasets.classification(recs, tokenizer: tok, labels: ["1"], options: DataOptions(maxLength: 5), report: &report)
        XCTAssertEqual(ex[0].ids.count, 5)
        XCTAssertEqual(ex[0].ids.last, 102, "[SEP] kept")
        XCTAssertEqual(report.truncated, 1)
        var o = DataOptions(maxLength: 5)
        o.truncate = false
        XCTAssertThrowsError(try Datasets.classification(recs, tokenizer: tok, labels: ["1"], options: o, report: &report)) {
            XCTAssertEqual("\($0)", d + "/t.jsonl:1: 10 tokens exceed the maximum length 5 (raise --max-length or allow truncation)")
        }
    }

    func testSplitsAreSeededAndStratified() {
        let strata = (0..<100).map { $0 < 80 ? "a" : "b" }
        let s1 = Split.indices(count: 100, validation: 0.1, test: 0.2, seed: 3, strata: strata)
        let s2 = Split.indices(count: 100, validation: 0.1, test: 0.2, seed: 3, strata: strata)
        XCTAssertEqual(s1.train, s2.train); XCTAssertEqual(s1.test, s2.test)
        XCTAssertEqual(s1.test.count, 20); XCTAssertEqual(s1.validation.count, 10)
        XCTAssertEqual(s1.test.filter { $0 >= 80 }.count, 4, "20 % of class b")
        XCTAssertEqual(Set(s1.train + s1.validation + s1.test).count, 100)
        XCTAssertNotEqual(Split.indices(count: 100, validation: 0.1, test: 0.2, seed: 4).test, s1.test)
    }

    func testChatRowsPutTheLossOnAssistantTokensOnly() throws {
        let d = try temporaryDirectory(self)
        try write("""
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]}
        {"prompt": "2+2=", "completion": "4"}
        {"messages": [{"role": "user", "content": "Hi"}]}

        """, to: d + "/c.jsonl")
        let tok = try ByteLevelBPETokenizer.fromGGUF(try GGUFFile(path: try fetchedSmolLM2GGUF()))
        let recs = try Table.read(d + "/c.jsonl")
        var report = DataReport()
        let tmpl = try ChatTemplate(named: "chatml")
        XCTAssertThrowsError(try Datasets.causalLM(recs, tokenizer: tok, chatTemplate: tmpl, eos: tok.eosId, options: DataOptions(maxLength: 512), report: &report)) {
            XCTAssertEqual("\($0)", d + "/c.jsonl:3: no assistant message to learn from")
        }
        let ex = try Datasets.causalLM(Array(recs.prefix(2)), tokenizer: tok, chatTemplate: tmpl, eos: tok.eosId, options: DataOptions(maxLength: 512), report: &report)
        // Chat: the trained tokens are exactly "Hello there<|im_end|>".
        let chat = ex[0]
        let trained = chat.targets.compactMap { $0 }
        XCTAssertEqual(tok.decode(trained, skipSpecialTokens: false), "Hello there<|im_end|>")
        XCTAssertEqual(tok.decode(chat.ids, skipSpecialTokens: false), try tmpl.render([ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello there")], addGenerationPrompt: false))
        // Prompt/completion: the completion and EOS.
        XCTAssertEqual(ex[1].targets.compactMap { $0 }, tok.encode("4", addSpecialTokens: false) + [tok.eosId!])
    }
}

extension DataTests {
    func testPackingJoinsExamplesAndKeepsTheirTargets() {
        let a = CausalLMTask.Example(pieces: [([1, 2], false), ([3, 4], true)])
        let b = CausalLMTask.Example(pieces: [([5], false), ([6, 7], true)])
        let c = CausalLMTask.Example(pieces: [([8, 9, 10, 11, 12], true)])
        let packed = Datasets.pack([a, b, c], maxLength: 8)
        XCTAssertEqual(packed.map(\.ids), [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12]])
        // a's positions predict 3 and 4; b's predict 6 and 7; the join (4 → 5) is not a target.
        XCTAssertEqual(packed[0].targets, [nil, 3, 4, nil, 6, 7, nil])
        XCTAssertEqual(packed[1].targets, c.targets)
    }
}

/// `graft data prepare`: sources → stratified, seeded splits.
final class PrepareTests: XCTestCase {
    func testTableAndClassFoldersToStratifiedSplits() throws {
        let d = try temporaryDirectory(self)
        try write((0..<100).map { "\"\($0 % 4 == 0 ? "b" : "a")\",\"text \($0)\"" }.joined(separator: "\n"), to: d + "/t.csv")
        let items = try Prepare.read(.table(path: d + "/t.csv", header: false, textColumn: "1", labelColumn: "0"))
        XCTAssertEqual(items.count, 100)
        let s = Prepare.split(items, validation: 0.1, test: 0.2, seed: 1)
        XCTAssertEqual(s.test.filter { $0.label == "b" }.count, 5, "20 % of the 25 b's")
        XCTAssertEqual(s.test.filter { $0.label == "a" }.count, 15)
        XCTAssertEqual(Prepare.split(items, validation: 0.1, test: 0.2, seed: 1).test, s.test, "seeded")
        try Prepare.write(s, to: d)
        let back = try Table.read(d + "/test.jsonl")
        XCTAssertEqual(back.map { $0.text("text") ?? "" }, s.test.map(\.text))
        let summary = try JSONValue.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: d + "/labels.json"))))
        XCTAssertEqual(summary["test"]?["b"]?.intValue, 5)

        // One subfolder per class; a Latin-1 file is read as Latin-1.
        for (c, texts) in [("sport", ["goal", "match"]), ("tech", ["chip"])] {
            try FileManager.default.createDirectory(atPath: d + "/news/" + c, withIntermediateDirectories: true)
            for (i, t) in texts.enumerated() { try write(t, to: d + "/news/\(c)/\(i).txt") }
        }
        try Data([0x63, 0x61, 0x66, 0xE9]).write(to: URL(fileURLWithPath: d + "/news/tech/latin.txt"))  // "café" in Latin-1
        let folder = try Prepare.read(.classFolders(path: d + "/news"))
        XCTAssertEqual(folder.map(\.label), ["sport", "sport", "tech", "tech"])
        XCTAssertTrue(folder.contains { $0.text == "café" })
    }

    func testMissingLabelIsNamedAndNothingIsWritten() throws {
        let d = try temporaryDirectory(self)
        try write("text,label\ngood,1\nbad,\nfine,0\n", to: d + "/t.csv")
        XCTAssertThrowsError(try Prepare.read(.table(path: d + "/t.csv", header: true, textColumn: "text", labelColumn: "label"))) {
            XCTAssertEqual("\($0)", d + "/t.csv:3: missing label column 'label' (the row has: label, text)")
        }
        let (code, _, err) = try runGraft(PrepareTests.self, ["data", "prepare", "--input", d + "/t.csv", "--output", d + "/out"])
        XCTAssertNotEqual(code, 0)
        XCTAssertTrue(err.contains("t.csv:3"), err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: d + "/out"))
        let (c2, _, e2) = try runGraft(PrepareTests.self, ["data", "prepare", "--corpus", "poetry"])
        XCTAssertNotEqual(c2, 0)
        XCTAssertTrue(e2.contains("unknown corpus 'poetry'") && e2.contains("dutch-sentiment"), e2)
    }
}
