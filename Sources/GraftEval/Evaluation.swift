import Foundation
import GraftAdapters
import GraftData
import GraftFormats
import GraftModels
import GraftTensor
import GraftText

/// Classification metrics: accuracy, macro-F1 and the confusion matrix (rows: true class, columns:
/// predicted class).
public struct ClassificationMetrics: Sendable {
    public let labels: [String]
    public let confusion: [[Int]]
    public var total: Int { confusion.joined().reduce(0, +) }
    public var accuracy: Double { Double((0..<labels.count).reduce(0) { $0 + confusion[$1][$1] }) / Double(max(1, total)) }

    /// Mean over classes of F1 = 2·P·R/(P + R) (a class with no support and no predictions is skipped,
    /// as scikit-learn's zero_division handling would count it as 0 otherwise).
    public var macroF1: Double {
        var f1s: [Double] = []
        for c in labels.indices {
            let tp = Double(confusion[c][c])
            let predicted = Double(confusion.reduce(0) { $0 + $1[c] }), actual = Double(confusion[c].reduce(0, +))
            if predicted == 0 && actual == 0 { continue }
            let p = predicted > 0 ? tp / predicted : 0, r = actual > 0 ? tp / actual : 0
            f1s.append(p + r > 0 ? 2 * p * r / (p + r) : 0)
        }
        return f1s.isEmpty ? 0 : f1s.reduce(0, +) / Double(f1s.count)
    }

    public init(labels: [String], truth: [Int], predicted: [Int]) {
        self.labels = labels
        var m = [[Int]](repeating: [Int](repeating: 0, count: labels.count), count: labels.count)
        for (t, p) in zip(truth, predicted) { m[t][p] += 1 }
        confusion = m
    }

    public var json: JSONValue {
        .object([("examples", .int(Int64(total))), ("accuracy", .double(accuracy)), ("macro_f1", .double(macroF1)),
                 ("labels", .array(labels.map { .string($0) })),
                 ("confusion_matrix", .array(confusion.map { .array($0.map { .int(Int64($0)) }) }))])
    }
}

/// `graft eval`: a model (plus an adapter) on a labelled dataset.
public enum Evaluation {
    /// The class names an adapter was trained with (`labels.json` beside it), else "0", "1", … by head size.
    public static func labels(adapterPath: String?, classes: Int) throws -> (column: String?, names: [String]) {
        if let a = adapterPath, let d = FileManager.default.contents(atPath: (a as NSString).appendingPathComponent("labels.json")) {
            let j = try JSONValue.parse([UInt8](d))
            let names = j["labels"]?.arrayValue?.compactMap(\.stringValue) ?? []
            guard names.count == classes else { throw TrainingError("\(a)/labels.json lists \(names.count) labels but the classifier has \(classes) outputs") }
            return (j["label_column"]?.stringValue, names)
        }
        return (nil, (0..<classes).map(String.init))
    }

    /// Logits and predictions for every record, and the metrics.
    public static func classification(model folder: String, adapter: String?, data: String, header: Bool, textColumn: String,
                                      labelColumn: String?, maxLength: Int?, batchSize: Int = 32) throws
        -> (metrics: ClassificationMetrics, logits: [[Float]], records: [Record]) {
        var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        let tokenizer = try TokenizerLoader.load(model: folder)
        guard let a = adapter else { throw TrainingError("classification needs --adapter (a folder with the classifier head)") }
        let ad = try LoRAAdapter(path: a)
        try bert.attach(ad.lowRankUpdates(), source: a)
        guard let (w, b) = try ad.classificationHead() else { throw TrainingError("\(a): the adapter has no classifier (modules_to_save)") }
        let head = Linear(weight: FloatBuffer(w), bias: b.map { FloatBuffer($0) }, inFeatures: w.shape[1], outFeatures: w.shape[0])
        let clf = try BertForSequenceClassification(encoder: bert, tokenizer: tokenizer, head: head)
        let (savedColumn, names) = try labels(adapterPath: a, classes: head.outFeatures)
        let records = try Table.read(data, header: header)
        guard !records.isEmpty else { throw DataError(data, "the dataset is empty") }
        var o = DataOptions(maxLength: maxLength ?? bert.config.maxPositions)
        o.textColumn = textColumn; o.labelColumn = labelColumn ?? savedColumn ?? "label"
        var report = DataReport()
        let examples = try Datasets.classification(records, tokenizer: tokenizer, labels: names, options: o, report: &report)
        var logits: [[Float]] = []
        var start = 0
        while start < examples.count {
            let chunk = examples[start..<min(examples.count, start + batchSize)]
            let (l, _) = try clf.forwardTraining(chunk.map(\.ids), rng: nil)
            let c = head.outFeatures
            logits += (0..<chunk.count).map { Array(l.values[($0 * c)..<(($0 + 1) * c)]) }
            start += batchSize
        }
        let predicted = logits.map { row in row.indices.max { row[$0] < row[$1] }! }
        return (ClassificationMetrics(labels: names, truth: examples.map(\.label), predicted: predicted), logits, records)
    }

    /// Perplexity exp(mean token cross-entropy) over the dataset's trained positions.
    public static func perplexity(model path: String, adapter: String?, data: String, maxLength: Int?, batchSize: Int = 8) throws
        -> (loss: Double, perplexity: Double, tokens: Int) {
        var lm = try CausalLM(path: path)
        if let a = adapter {
            let ad = try LoRAAdapter(path: a)
            try lm.model.attach(ad.lowRankUpdates(), source: a)
        }
        let records = try Table.read(data)
        guard !records.isEmpty else { throw DataError(data, "the dataset is empty") }
        var report = DataReport()
        let ex = try Datasets.causalLM(records, tokenizer: lm.tokenizer, chatTemplate: lm.chatTemplate, eos: lm.eosId,
                                       options: DataOptions(maxLength: maxLength ?? lm.model.config.contextLength), report: &report)
        var sum = 0.0, count = 0, start = 0
        let task = CausalLMTask(model: lm.model)
        while start < ex.count {
            let r = try task.step(Array(ex[start..<min(ex.count, start + batchSize)]), lossScale: 1, rng: nil, backward: false)
            sum += r.lossSum; count += r.count
            start += batchSize
        }
        let loss = sum / Double(max(1, count))
        return (loss, exp(loss), count)
    }
}
