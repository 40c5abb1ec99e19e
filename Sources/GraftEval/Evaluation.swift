import Foundation
import GraftAdapters
import GraftData
import GraftFormats
import GraftModels
import GraftTensor
import GraftText
import GraftTraining

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

/// A classification model ready to evaluate, with the names of its classes.
public struct LoadedClassifier: Sendable {
    public let model: BertForSequenceClassification
    /// The label column it was trained on (from labels.json), if recorded.
    public let labelColumn: String?
    public let labels: [String]
}

/// `graft eval`: a model (plus an adapter) on a labelled dataset.
public enum Evaluation {
    /// The class names an adapter was trained with (`labels.json` beside it), else "0", "1", … by head size.
    public static func labels(adapterPath: String?, classes: Int) throws -> (column: String?, names: [String]) {
        if let a = adapterPath, let (column, names) = try AdapterLabels.read(a) {
            guard names.count == classes else { throw TrainingError("\(a)/labels.json lists \(names.count) labels but the classifier has \(classes) outputs") }
            return (column, names)
        }
        return (nil, (0..<classes).map(String.init))
    }

    /// A classifier from a model folder and an adapter folder: the adapter's LoRA applied (unless
    /// `headOnly`: the model already contains the update, e.g. a merge) and its classifier head.
    public static func classifier(model folder: String, adapter: String, headOnly: Bool = false, bf16: Bool = false) throws -> LoadedClassifier {
        var bert = try BertModel(checkpoint: try Checkpoint(path: folder))
        let tokenizer = try TokenizerLoader.load(model: folder)
        if !headOnly {
            try bert.attach(AdapterMethods.open(adapter))
        }
        bert.packForTraining(bf16: bf16, backward: false)
        return try classifier(encoder: bert, tokenizer: tokenizer, head: adapter)
    }

    /// A classifier whose head is in the model folder itself (`classifier.weight`, `classifier.bias`, as
    /// full fine-tuning and transformers' BertForSequenceClassification save it), labels from its labels.json.
    public static func classifier(fineTuned folder: String, bf16: Bool = false) throws -> LoadedClassifier {
        let checkpoint = try Checkpoint(path: folder)
        guard let wName = checkpoint.names.first(where: { $0 == "classifier.weight" || $0.hasSuffix(".classifier.weight") }) else {
            throw TrainingError("\(folder) has no classifier head (classifier.weight): give --adapter, a folder with one")
        }
        let w = try checkpoint.tensor(wName)
        guard w.shape.count == 2 else { throw TrainingError("\(folder): \(wName) has shape \(w.shape), expected [classes, hidden]") }
        let bName = String(wName.dropLast("weight".count)) + "bias"
        let b = checkpoint.info(bName) != nil ? FloatBuffer(try checkpoint.tensor(bName)) : nil
        var bert = try BertModel(checkpoint: checkpoint)
        bert.packForTraining(bf16: bf16, backward: false)
        let head = Linear(weight: FloatBuffer(w), bias: b, inFeatures: w.shape[1], outFeatures: w.shape[0])
        let model = try BertForSequenceClassification(encoder: bert, tokenizer: try TokenizerLoader.load(model: folder), head: head)
        let (column, names) = try labels(adapterPath: folder, classes: head.outFeatures)
        return LoadedClassifier(model: model, labelColumn: column, labels: names)
    }

    /// `encoder` (ready to run: adapters attached, bf16 packed) with the classifier head saved in
    /// the adapter folder `head` (its LoRA modules are not applied) and the class names beside it.
    public static func classifier(encoder: BertModel, tokenizer: any Tokenizer, head folder: String) throws -> LoadedClassifier {
        let ad = try AdapterMethods.open(folder)
        guard let (w, b) = try ad.classificationHead() else { throw TrainingError("\(folder): the adapter has no classifier (modules_to_save)") }
        guard w.shape.count == 2 else { throw TrainingError("\(folder): the classifier weight has shape \(w.shape), expected [classes, hidden]") }
        let head = Linear(weight: FloatBuffer(w), bias: b.map { FloatBuffer($0) }, inFeatures: w.shape[1], outFeatures: w.shape[0])
        let model = try BertForSequenceClassification(encoder: encoder, tokenizer: tokenizer, head: head)
        let (column, names) = try labels(adapterPath: folder, classes: head.outFeatures)
        return LoadedClassifier(model: model, labelColumn: column, labels: names)
    }

    /// Reads and tokenizes labelled data for `classifier`; a label outside its classes is an error
    /// naming the file and line.
    public static func examples(_ data: String, for c: LoadedClassifier, header: Bool = true, textColumn: String = "text",
                                labelColumn: String? = nil, maxLength: Int? = nil) throws -> (examples: [ClassificationTask.Example], records: [Record]) {
        let records = try Table.read(data, header: header)
        guard !records.isEmpty else { throw DataError(data, "the dataset is empty") }
        var o = DataOptions(maxLength: maxLength ?? c.model.encoder.config.maxPositions)
        o.textColumn = textColumn; o.labelColumn = labelColumn ?? c.labelColumn ?? "label"
        var report = DataReport()
        return (try Datasets.classification(records, tokenizer: c.model.tokenizer, labels: c.labels, options: o, report: &report), records)
    }

    /// Logits for every example, in input order. Batches hold examples of similar length (less
    /// padding; each example's logits do not depend on its batch), and the products and attention
    /// are split over the cores by Graft (BLAS runs single-threaded).
    public static func logits(_ model: BertForSequenceClassification, _ examples: [ClassificationTask.Example], batchSize: Int = 32) throws -> [[Float]] {
        Linalg.useSingleThreadedBLAS()
        let order = examples.indices.sorted { (examples[$0].ids.count, $0) < (examples[$1].ids.count, $1) }
        let c = model.head.outFeatures
        var out = [[Float]](repeating: [], count: examples.count)
        var start = 0
        while start < order.count {
            let idx = Array(order[start..<min(order.count, start + batchSize)])
            let (l, _) = try model.forwardTraining(idx.map { examples[$0].ids }, rng: nil)
            let v = l.array
            for (k, i) in idx.enumerated() { out[i] = Array(v[(k * c)..<((k + 1) * c)]) }
            start += batchSize
        }
        return out
    }

    /// Metrics of `logits` against the examples' labels.
    public static func metrics(_ logits: [[Float]], _ examples: [ClassificationTask.Example], labels: [String]) -> ClassificationMetrics {
        let predicted = logits.map { row in row.indices.max { row[$0] < row[$1] } ?? 0 }
        return ClassificationMetrics(labels: labels, truth: examples.map(\.label), predicted: predicted)
    }

    /// `graft eval` for classification: logits and predictions for every record, and the metrics.
    public static func classification(model folder: String, adapter: String?, headOnly: Bool = false, bf16: Bool = false, data: String,
                                      header: Bool, textColumn: String, labelColumn: String?, maxLength: Int?, batchSize: Int = 32) throws
        -> (metrics: ClassificationMetrics, logits: [[Float]], records: [Record]) {
        let c: LoadedClassifier
        if let a = adapter {
            c = try classifier(model: folder, adapter: a, headOnly: headOnly, bf16: bf16)
        } else {
            c = try classifier(fineTuned: folder, bf16: bf16)
        }
        let (ex, records) = try examples(data, for: c, header: header, textColumn: textColumn, labelColumn: labelColumn, maxLength: maxLength)
        let l = try logits(c.model, ex, batchSize: batchSize)
        return (metrics(l, ex, labels: c.labels), l, records)
    }

    /// Perplexity exp(mean token cross-entropy) over the dataset's trained positions.
    public static func perplexity(model path: String, adapter: String?, data: String, maxLength: Int?, batchSize: Int = 8) throws
        -> (loss: Double, perplexity: Double, tokens: Int) {
        var lm = try CausalLM(path: path)
        if let a = adapter {
            try lm.model.attach(AdapterMethods.open(a))
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
