import GraftTensor

/// Scaled dot-product self-attention over a right-padded batch, for training: `forwardTraining` keeps
/// the attention probabilities, `backward` returns the gradients of the queries, keys and values.
/// Grouped-query attention: query head h reads key/value head h / (heads / kvHeads). Positions at or
/// beyond a sequence's length are padding: they attend to nothing and get zero output and gradient.
public struct SelfAttention: Sendable {
    public let heads: Int, kvHeads: Int, headDim: Int
    /// Causal (a decoder): position i attends to positions ≤ i. Otherwise every real position.
    public let causal: Bool

    public init(heads: Int, kvHeads: Int, headDim: Int, causal: Bool) {
        self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.causal = causal
    }

    var scale: Float { 1 / Float(headDim).squareRoot() }

    /// q [b·t × heads·dh], k and v [b·t × kvHeads·dh] → context [b·t × heads·dh] and probabilities
    /// [b × heads × t × t].
    public func forwardTraining(q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, batch b: Int, length t: Int,
                                lengths: [Int]) -> (ctx: FloatBuffer, probs: FloatBuffer) {
        let qw = heads * headDim, kw = kvHeads * headDim, group = heads / kvHeads, dh = headDim
        let ctx = FloatBuffer(repeating: 0, count: b * t * qw)
        let probs = FloatBuffer(repeating: 0, count: b * heads * t * t)
        let qp = q.values.baseAddress!, kp = k.values.baseAddress!, vp = v.values.baseAddress!
        let cp = ctx.mutable.baseAddress!, pp = probs.mutable.baseAddress!
        for s in 0..<b {
            let len = lengths[s]
            guard len > 0 else { continue }
            for head in 0..<heads {
                let g = head / group
                let p = pp + (s * heads + head) * t * t
                Linalg.gemm(m: len, n: len, k: dh, alpha: scale, a: qp + s * t * qw + head * dh, lda: qw,
                            b: kp + s * t * kw + g * dh, ldb: kw, transB: true, c: p, ldc: t)
                if causal { for r in 0..<len { for c in (r + 1)..<max(len, r + 1) { p[r * t + c] = -.infinity } } }
                for r in 0..<len { Activation.softmaxRows(p + r * t, rows: 1, width: len) }
                Linalg.gemm(m: len, n: dh, k: len, a: p, lda: t, b: vp + s * t * kw + g * dh, ldb: kw,
                            c: cp + s * t * qw + head * dh, ldc: qw)
            }
        }
        return (ctx, probs)
    }

    /// Given dL/dcontext: dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = scale·dS·K,
    /// dK = scale·dSᵀ·Q (summed over the query heads sharing a key/value head).
    public func backward(_ dCtx: FloatBuffer, q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, probs: FloatBuffer,
                         batch b: Int, length t: Int, lengths: [Int]) -> (dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer) {
        let qw = heads * headDim, kw = kvHeads * headDim, group = heads / kvHeads, dh = headDim
        let dq = FloatBuffer(repeating: 0, count: b * t * qw)
        let dk = FloatBuffer(repeating: 0, count: b * t * kw), dv = FloatBuffer(repeating: 0, count: b * t * kw)
        let qp = q.values.baseAddress!, kp = k.values.baseAddress!, vp = v.values.baseAddress!, op = dCtx.values.baseAddress!
        let dqp = dq.mutable.baseAddress!, dkp = dk.mutable.baseAddress!, dvp = dv.mutable.baseAddress!
        let pp = probs.values.baseAddress!
        let ds = UnsafeMutablePointer<Float>.allocate(capacity: max(1, t * t))
        defer { ds.deallocate() }
        for s in 0..<b {
            let len = lengths[s]
            guard len > 0 else { continue }
            for head in 0..<heads {
                let g = head / group
                let p = pp + (s * heads + head) * t * t
                let dO = op + s * t * qw + head * dh
                // dV[g] += Pᵀ · dO
                Linalg.gemm(m: len, n: dh, k: len, a: p, lda: t, transA: true, b: dO, ldb: qw,
                            beta: 1, c: dvp + s * t * kw + g * dh, ldc: kw)
                // dP = dO · Vᵀ, then dS in place.
                Linalg.gemm(m: len, n: len, k: dh, a: dO, lda: qw, b: vp + s * t * kw + g * dh, ldb: kw, transB: true,
                            c: ds, ldc: len)
                for r in 0..<len {
                    let pr = p + r * t, dr = ds + r * len
                    var dot: Float = 0
                    for c in 0..<len { dot += pr[c] * dr[c] }
                    for c in 0..<len { dr[c] = pr[c] * (dr[c] - dot) }
                }
                Linalg.gemm(m: len, n: dh, k: len, alpha: scale, a: ds, lda: len, b: kp + s * t * kw + g * dh, ldb: kw,
                            c: dqp + s * t * qw + head * dh, ldc: qw)
                Linalg.gemm(m: len, n: dh, k: len, alpha: scale, a: ds, lda: len, transA: true, b: qp + s * t * qw + head * dh, ldb: qw,
                            beta: 1, c: dkp + s * t * kw + g * dh, ldc: kw)
            }
        }
        return (dq, dk, dv)
    }
}
