import GraftTensor

/// What one micro-batch gave: summed loss over `count` loss terms (examples or target tokens),
/// correct predictions (classification, in-batch retrieval), and tokens processed.
public struct StepResult: Sendable {
    public var lossSum: Double = 0, count = 0, correct = 0, tokens = 0
    public init(lossSum: Double = 0, count: Int = 0, correct: Int = 0, tokens: Int = 0) {
        self.lossSum = lossSum; self.count = count; self.correct = correct; self.tokens = tokens
    }
    public static func += (a: inout StepResult, b: StepResult) {
        a.lossSum += b.lossSum; a.count += b.count; a.correct += b.correct; a.tokens += b.tokens
    }
    public var meanLoss: Double { count > 0 ? lossSum / Double(count) : .nan }
}

/// A training objective over examples of one kind: forward, loss, and (when asked) backward into the
/// gradients of the model's trainable layers.
public protocol TrainingTask {
    associatedtype Example: Sendable
    /// Tokens in an example (batches are bucketed by it; throughput counts it).
    func length(_ e: Example) -> Int
    /// Runs a micro-batch. With `backward`, accumulates the gradients of (its mean loss) · `lossScale`.
    func step(_ batch: [Example], lossScale: Float, rng: UnsafeMutablePointer<SeededRNG>?, backward: Bool) throws -> StepResult
    /// Whether `correct` is meaningful (an accuracy is reported).
    var reportsAccuracy: Bool { get }
}
