import Foundation
import GraftData
import GraftFormats
import GraftText

/// How records become examples: column names, length limit and what to do with bad rows.
public struct DataOptions: Sendable, Equatable {
    public var textColumn = "text"
    public var labelColumn = "label"
    public var maxLength: Int
    /// Cut sequences longer than `maxLength` (counted, with a warning); otherwise they are an error.
    public var truncate = true
    /// Skip (and count) rows that fail the schema instead of stopping at the first.
    public var skipBadRows = false

    public init(maxLength: Int) { self.maxLength = maxLength }
}

/// Counts from turning one file's records into examples.
public struct DataReport: Sendable {
    public var examples = 0, skipped = 0, truncated = 0
    public var firstSkipped: String? = nil
    public init() {}
}

/// Records → examples for each task, with schema checks that name the file and line.
public enum Datasets {
    /// Runs `make` on every record; a failure is an error, or with `skipBadRows` a counted skip.
    static func convert<E>(_ records: [Record], _ options: DataOptions, _ report: inout DataReport,
                           _ make: (Record) throws -> E?) throws -> [E] {
        var out: [E] = []
        for r in records {
            do {
                if let e = try make(r) { out.append(e) }
            } catch let e as DataError where options.skipBadRows {
                report.skipped += 1
                if report.firstSkipped == nil { report.firstSkipped = e.description }
            }
        }
        report.examples = out.count
        return out
    }

    static func field(_ r: Record, _ name: String) throws -> String {
        guard r.fields[name] != nil else {
            throw r.error("missing column '\(name)' (the row has: \(r.fields.keys.sorted().joined(separator: ", ")))")
        }
        guard let s = r.text(name) else { throw r.error("column '\(name)' is not text") }
        return s
    }

    /// Cuts `ids` to the limit, keeping the last token when `keepLast` (BERT's [SEP]).
    static func limit(_ ids: [Int], _ r: Record, _ o: DataOptions, _ truncated: inout Int, keepLast: Bool) throws -> [Int] {
        guard ids.count > o.maxLength else { return ids }
        guard o.truncate else { throw r.error("\(ids.count) tokens exceed the maximum length \(o.maxLength) (raise --max-length or allow truncation)") }
        truncated += 1
        return keepLast ? Array(ids.prefix(o.maxLength - 1)) + [ids.last!] : Array(ids.prefix(o.maxLength))
    }

    /// The class names of a label column, in class-id order: numerically sorted when every label is
    /// an integer, else lexicographically.
    public static func labels(_ records: [Record], column: String) -> [String] {
        let set = Set(records.compactMap { $0.text(column) })
        if set.allSatisfy({ Int($0) != nil }) { return set.sorted { Int($0)! < Int($1)! } }
        return set.sorted()
    }

    public static func classification(_ records: [Record], tokenizer: any Tokenizer, labels: [String], options o: DataOptions,
                                      report: inout DataReport) throws -> [ClassificationTask.Example] {
        let index = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        var truncated = 0
        let out = try convert(records, o, &report) { r -> ClassificationTask.Example in
            let text = try field(r, o.textColumn), label = try field(r, o.labelColumn)
            guard let y = index[label] else {
                // Not a row-level slip that --skip-bad-rows may hide: the splits disagree on the classes.
                throw TrainingError(r.error("label '\(label)' is not one of the training data's classes (\(labels.joined(separator: ", ")))").description)
            }
            let ids = try limit(tokenizer.encode(text, addSpecialTokens: true), r, o, &truncated, keepLast: true)
            return ClassificationTask.Example(ids: ids, label: y)
        }
        report.truncated += truncated
        return out
    }

    /// Causal-LM rows: `{"messages": [{"role", "content"}…]}` through the chat template (loss on the
    /// assistant turns), `{"prompt", "completion"}` (loss on the completion and EOS), or `{"text"}`
    /// (loss on every token).
    public static func causalLM(_ records: [Record], tokenizer: any Tokenizer, chatTemplate: ChatTemplate?, eos: Int?,
                                options o: DataOptions, report: inout DataReport) throws -> [CausalLMTask.Example] {
        var truncated = 0
        let out = try convert(records, o, &report) { r -> CausalLMTask.Example in
            var pieces: [(ids: [Int], trained: Bool)] = []
            if let m = r["messages"] {
                guard let arr = m.arrayValue, !arr.isEmpty else { throw r.error("'messages' must be a non-empty array") }
                let msgs = try arr.enumerated().map { i, v -> ChatMessage in
                    guard let role = v["role"]?.stringValue, let content = v["content"]?.stringValue else {
                        throw r.error("messages[\(i)] needs string 'role' and 'content'")
                    }
                    return ChatMessage(role: role, content: content)
                }
                guard msgs.contains(where: { $0.role == "assistant" }) else { throw r.error("no assistant message to learn from") }
                guard let chatTemplate else { throw r.error("'messages' rows need a chat template, and the model has none") }
                let segments: [(text: String, assistant: Bool)]
                do { segments = try chatTemplate.segments(msgs) } catch let e as JinjaError where e.raised {
                    throw r.error("the chat template refuses this conversation: \(e.message)")
                } catch { throw r.error("the chat template: \(error)") }
                pieces = segments.map { (tokenizer.encode($0.text, addSpecialTokens: false), $0.assistant) }
            } else if r["prompt"] != nil || r["completion"] != nil {
                let p = try field(r, "prompt"), c = try field(r, "completion")
                pieces = [(tokenizer.encode(p, addSpecialTokens: false), false),
                          (tokenizer.encode(c, addSpecialTokens: false) + (eos.map { [$0] } ?? []), true)]
            } else if r["text"] != nil {
                pieces = [(tokenizer.encode(try field(r, "text"), addSpecialTokens: false) + (eos.map { [$0] } ?? []), true)]
            } else {
                throw r.error("expected 'messages', 'prompt' + 'completion', or 'text' (the row has: \(r.fields.keys.sorted().joined(separator: ", ")))")
            }
            let e = CausalLMTask.Example(pieces: pieces)
            guard e.targets.contains(where: { $0 != nil }) else { throw r.error("no tokens to learn from (empty completion?)") }
            let ids = try limit(e.ids, r, o, &truncated, keepLast: false)
            return CausalLMTask.Example(ids: ids, targets: Array(e.targets.prefix(ids.count - 1)) + [nil])
        }
        report.truncated += truncated
        return out
    }

    /// Packing for causal-LM training: consecutive examples concatenated into sequences of at most
    /// `maxLength` tokens (fewer, fuller rows: no padding). As TRL's classic packing, attention runs
    /// across the joined examples; each keeps its own targets, and the join point is never a target.
    public static func pack(_ examples: [CausalLMTask.Example], maxLength: Int) -> [CausalLMTask.Example] {
        var out: [CausalLMTask.Example] = []
        var ids: [Int] = [], targets: [Int?] = []
        for e in examples {
            if !ids.isEmpty && ids.count + e.ids.count > maxLength {
                out.append(CausalLMTask.Example(ids: ids, targets: targets))
                ids = []; targets = []
            }
            ids += e.ids; targets += e.targets
        }
        if !ids.isEmpty { out.append(CausalLMTask.Example(ids: ids, targets: targets)) }
        return out
    }

    /// Retrieval pairs: `query` (or `anchor`), `positive`, optional `negative`.
    public static func pairs(_ records: [Record], tokenizer: any Tokenizer, options o: DataOptions, report: inout DataReport) throws
        -> [EmbeddingTask.Example] {
        var truncated = 0
        let out = try convert(records, o, &report) { r -> EmbeddingTask.Example in
            let q = try field(r, r["query"] != nil ? "query" : "anchor"), p = try field(r, "positive")
            let n = try r["negative"].map { _ in try field(r, "negative") }
            func enc(_ s: String) throws -> [Int] { try limit(tokenizer.encode(s, addSpecialTokens: true), r, o, &truncated, keepLast: true) }
            return EmbeddingTask.Example(query: try enc(q), positive: try enc(p), negative: try n.map(enc))
        }
        report.truncated += truncated
        return out
    }
}
