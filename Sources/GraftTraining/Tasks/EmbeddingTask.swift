import Foundation
import GraftModels
import GraftTensor

/// Retrieval embeddings with in-batch negatives: sentence-transformers' MultipleNegativesRankingLoss.
/// Queries and documents (the positives, then any hard negatives) are mean-pooled and L2-normalised;
/// scores = scale · cos(qᵢ, dⱼ) and query i's target is its own positive j = i.
public struct EmbeddingTask: TrainingTask {
    public struct Example: Sendable {
        public let query: [Int], positive: [Int], negative: [Int]?
        public init(query: [Int], positive: [Int], negative: [Int]?) { self.query = query; self.positive = positive; self.negative = negative }
    }

    public var encoder: BertModel
    public let scale: Float
    public var reportsAccuracy: Bool { true }

    public init(encoder: BertModel, scale: Float = 20) { self.encoder = encoder; self.scale = scale }

    public func length(_ e: Example) -> Int { e.query.count + e.positive.count + (e.negative?.count ?? 0) }

    /// Mean-pooled, normalised embeddings [n × hidden] of the sequences' hidden states, and the norms.
    func pool(_ hidden: FloatBuffer, lengths: [Int], length t: Int) -> (FloatBuffer, [Float]) {
        let h = encoder.config.hidden, out = FloatBuffer(repeating: 0, count: lengths.count * h)
        var norms = [Float](repeating: 0, count: lengths.count)
        let hv = hidden.values, o = out.mutable
        for (s, len) in lengths.enumerated() {
            for r in 0..<len { for j in 0..<h { o[s * h + j] += hv[(s * t + r) * h + j] } }
            var ss: Float = 0
            for j in 0..<h { o[s * h + j] /= Float(len); ss += o[s * h + j] * o[s * h + j] }
            let n = max(ss.squareRoot(), 1e-12)
            norms[s] = n
            for j in 0..<h { o[s * h + j] /= n }
        }
        return (out, norms)
    }

    /// Backward of `pool`: through the normalisation (dx = (dy − y·(y·dy)) / ‖x‖) and the mean.
    func poolBackward(_ dy: FloatBuffer, pooled y: FloatBuffer, norms: [Float], lengths: [Int], length t: Int) -> FloatBuffer {
        let h = encoder.config.hidden, dHidden = FloatBuffer(repeating: 0, count: lengths.count * t * h)
        let d = dHidden.mutable, dv = dy.values, yv = y.values
        for (s, len) in lengths.enumerated() {
            var dot: Float = 0
            for j in 0..<h { dot += yv[s * h + j] * dv[s * h + j] }
            for j in 0..<h {
                let g = (dv[s * h + j] - yv[s * h + j] * dot) / norms[s] / Float(len)
                for r in 0..<len { d[(s * t + r) * h + j] = g }
            }
        }
        return dHidden
    }

    public func step(_ batch: [Example], lossScale: Float, rng: UnsafeMutablePointer<SeededRNG>?, backward: Bool) throws -> StepResult {
        let queries = batch.map(\.query)
        let negatives = batch.compactMap(\.negative)
        guard negatives.isEmpty || negatives.count == batch.count else {
            throw TrainingError("either every example of a batch has a negative or none has")
        }
        let docs = batch.map(\.positive) + negatives
        let (hq, tq) = try encoder.forwardTraining(queries, rng: rng)
        let (hd, td) = try encoder.forwardTraining(docs, rng: rng)
        let (q, nq) = pool(hq, lengths: tq.lengths, length: tq.length)
        let (d, nd) = pool(hd, lengths: td.lengths, length: td.length)
        let b = batch.count, n = docs.count, h = encoder.config.hidden
        let scores = FloatBuffer(count: b * n)
        Linalg.gemm(m: b, n: n, k: h, alpha: scale, a: q.values.baseAddress!, b: d.values.baseAddress!, transB: true, c: scores.mutable.baseAddress!)
        let (sum, count, ds) = Loss.crossEntropy(scores, classes: n, targets: (0..<b).map { $0 }, gradScale: lossScale / Float(b))
        var correct = 0
        let sv = scores.values
        for i in 0..<b where (0..<n).allSatisfy({ $0 == i || sv[i * n + $0] < sv[i * n + i] }) { correct += 1 }
        if backward {
            let dq = FloatBuffer(count: b * h), dd = FloatBuffer(count: n * h)
            Linalg.gemm(m: b, n: h, k: n, alpha: scale, a: ds.values.baseAddress!, b: d.values.baseAddress!, c: dq.mutable.baseAddress!)
            Linalg.gemm(m: n, n: h, k: b, alpha: scale, a: ds.values.baseAddress!, transA: true, b: q.values.baseAddress!, c: dd.mutable.baseAddress!)
            encoder.backward(poolBackward(dq, pooled: q, norms: nq, lengths: tq.lengths, length: tq.length), tape: tq)
            encoder.backward(poolBackward(dd, pooled: d, norms: nd, lengths: td.lengths, length: td.length), tape: td)
        }
        return StepResult(lossSum: sum, count: count, correct: correct, tokens: batch.reduce(0) { $0 + length($1) })
    }
}
