import GraftModels
import GraftTensor

/// Next-token prediction (supervised fine-tuning): cross-entropy on the positions that have a target
/// (completion or assistant tokens), averaged over them.
public struct CausalLMTask: TrainingTask {
    public struct Example: Sendable {
        public let ids: [Int]
        /// targets[i]: the token position i must predict (ids[i + 1] on completion tokens), nil elsewhere.
        public let targets: [Int?]
        public init(ids: [Int], targets: [Int?]) { self.ids = ids; self.targets = targets }

        /// From token pieces marked trained or not: position i predicts ids[i + 1] when that token is trained.
        public init(pieces: [(ids: [Int], trained: Bool)]) {
            let ids = pieces.flatMap(\.ids)
            let mask = pieces.flatMap { p in [Bool](repeating: p.trained, count: p.ids.count) }
            self.ids = ids
            targets = (0..<ids.count).map { i in i + 1 < ids.count && mask[i + 1] ? ids[i + 1] : nil }
        }
    }

    public var model: LlamaModel
    public var reportsAccuracy: Bool { false }

    public init(model: LlamaModel) { self.model = model }

    public func length(_ e: Example) -> Int { e.ids.count }

    public func step(_ batch: [Example], lossScale: Float, rng: UnsafeMutablePointer<SeededRNG>?, backward: Bool) throws -> StepResult {
        let n = batch.reduce(0) { $0 + $1.targets.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
        let (sum, count) = try model.causalLMLoss(batch.map(\.ids), targets: batch.map(\.targets), gradScale: lossScale / Float(max(1, n)),
                                                  rng: rng, backward: backward)
        return StepResult(lossSum: sum, count: count, tokens: batch.reduce(0) { $0 + $1.ids.count })
    }
}
