import GraftModels
import GraftTensor

/// Sequence classification: BERT + pooler + a linear head, softmax cross-entropy over the classes
/// (transformers' BertForSequenceClassification).
public struct ClassificationTask: TrainingTask {
    public struct Example: Sendable {
        public let ids: [Int]
        public let label: Int
        public init(ids: [Int], label: Int) { self.ids = ids; self.label = label }
    }

    public var model: BertForSequenceClassification
    public var reportsAccuracy: Bool { true }

    public init(model: BertForSequenceClassification) { self.model = model }

    public func length(_ e: Example) -> Int { e.ids.count }

    public func step(_ batch: [Example], lossScale: Float, rng: UnsafeMutablePointer<SeededRNG>?, backward: Bool) throws -> StepResult {
        let (logits, tape) = try model.forwardTraining(batch.map(\.ids), rng: rng)
        let classes = model.head.outFeatures
        let (sum, count, dl) = Loss.crossEntropy(logits, classes: classes, targets: batch.map(\.label),
                                                  gradScale: lossScale / Float(max(1, batch.count)))
        if backward { model.backward(dl, tape: tape) }
        let lv = logits.values
        var correct = 0
        for (i, e) in batch.enumerated() {
            var best = 0
            for j in 1..<classes where lv[i * classes + j] > lv[i * classes + best] { best = j }
            if best == e.label { correct += 1 }
        }
        return StepResult(lossSum: sum, count: count, correct: correct, tokens: batch.reduce(0) { $0 + $1.ids.count })
    }

    /// Predicted class per example (no gradients).
    public func predict(_ examples: [Example]) throws -> [Int] {
        let (logits, _) = try model.forwardTraining(examples.map(\.ids), rng: nil)
        let c = model.head.outFeatures, lv = logits.values
        return (0..<examples.count).map { i in (0..<c).max { lv[i * c + $0] < lv[i * c + $1] }! }
    }
}
