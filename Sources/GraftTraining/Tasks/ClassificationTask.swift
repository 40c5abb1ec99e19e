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
        let correct = zip(Loss.argmax(logits, classes: classes), batch).filter { $0 == $1.label }.count
        return StepResult(lossSum: sum, count: count, correct: correct, tokens: batch.reduce(0) { $0 + $1.ids.count })
    }
}
