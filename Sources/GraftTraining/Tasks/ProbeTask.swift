import GraftModels
import GraftTensor

/// A linear probe: only the classification head trains, on features the frozen encoder computed once
/// (its pooled [CLS] output, as in evaluation). Each step is then a product with the head instead of a
/// pass through the encoder. The classifier dropout of transformers' train mode still applies.
public struct ProbeTask: TrainingTask {
    public struct Example: Sendable {
        public let features: [Float]
        public let label: Int
        /// Tokens of the text the features came from (for throughput).
        public let tokens: Int
    }

    public var head: Linear
    /// Dropout on the features in training (BERT's hidden_dropout_prob).
    public let dropout: Float
    public var reportsAccuracy: Bool { true }

    public init(head: Linear, dropout: Float) { self.head = head; self.dropout = dropout }

    /// Features for every example (in input order), computed in batches of similar length.
    public static func examples(_ model: BertForSequenceClassification, _ examples: [ClassificationTask.Example],
                                batchSize: Int = 32) throws -> [Example] {
        let order = examples.indices.sorted { (examples[$0].ids.count, $0) < (examples[$1].ids.count, $1) }
        let h = model.head.inFeatures
        var out = [Example?](repeating: nil, count: examples.count)
        var start = 0
        while start < order.count {
            let idx = Array(order[start..<min(order.count, start + batchSize)])
            let buffer = try model.features(idx.map { examples[$0].ids })
            let f = buffer.array
            for (k, i) in idx.enumerated() {
                out[i] = Example(features: Array(f[(k * h)..<((k + 1) * h)]), label: examples[i].label, tokens: examples[i].ids.count)
            }
            start += batchSize
        }
        return out.compactMap { $0 }
    }

    public func length(_ e: Example) -> Int { e.tokens }

    public func step(_ batch: [Example], lossScale: Float, rng: UnsafeMutablePointer<SeededRNG>?, backward: Bool) throws -> StepResult {
        let h = head.inFeatures, c = head.outFeatures, b = batch.count
        let x = FloatBuffer(count: b * h)
        let xv = x.mutable
        for (i, e) in batch.enumerated() { for j in 0..<h { xv[i * h + j] = e.features[j] } }
        _ = Dropout.apply(x, p: rng == nil ? 0 : dropout, seed: rng?.pointee.next() ?? 0)
        let (logits, saved) = head.forwardTraining(x, rows: b, rng: rng)
        let (sum, count, dl) = Loss.crossEntropy(logits, classes: c, targets: batch.map(\.label), gradScale: lossScale / Float(max(1, b)))
        if backward { _ = head.backward(dl, saved: saved, rows: b, needInput: false) }
        let correct = zip(Loss.argmax(logits, classes: c), batch).filter { $0 == $1.label }.count
        return StepResult(lossSum: sum, count: count, correct: correct, tokens: batch.reduce(0) { $0 + $1.tokens })
    }
}
