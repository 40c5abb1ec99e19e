import GraftTensor

/// Scaled dot-product self-attention over a right-padded batch, for training: `forwardTraining` keeps
/// the attention probabilities, `backward` returns the gradients of the queries, keys and values.
/// Grouped-query attention: query head h reads key/value head h / (heads / kvHeads). Positions at or
/// beyond a sequence's length are padding: they attend to nothing and get zero output and gradient.
/// Optional dropout on the probabilities (transformers' attention_probs_dropout_prob).
public struct SelfAttention: Sendable {
    public let heads: Int, kvHeads: Int, headDim: Int
    /// Causal (a decoder): position i attends to positions ≤ i. Otherwise every real position.
    public let causal: Bool

    public init(heads: Int, kvHeads: Int, headDim: Int, causal: Bool) {
        self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.causal = causal
    }

    var scale: Float { 1 / Float(headDim).squareRoot() }

    /// What `backward` needs besides q, k, v.
    public struct Saved: @unchecked Sendable {
        /// Softmax probabilities P [b × heads × tq × t].
        public let probs: FloatBuffer
        /// Dropout scale on P (0 or 1/(1 − p)), same layout; nil without dropout.
        public let dropScale: FloatBuffer?
    }

    /// q [b·tq × heads·dh], k and v [b·t × kvHeads·dh] → context [b·tq × heads·dh]. The queries are
    /// each sequence's first `queries` positions (tq; default all t) — a classifier reading only the
    /// first token needs just that one query in the last layer. `dropout` > 0 drops probabilities with
    /// masks keyed by (`seed`, sequence, head): the same whatever the thread count.
    public func forwardTraining(q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, batch b: Int, length t: Int,
                                lengths: [Int], queries: Int? = nil, dropout: Float = 0, seed: UInt64 = 0) -> (ctx: FloatBuffer, saved: Saved) {
        let qw = heads * headDim, kw = kvHeads * headDim, group = heads / kvHeads, dh = headDim, tq = queries ?? t
        precondition(tq == t || !causal, "query subsets are for bidirectional attention")
        let ctx = FloatBuffer(repeating: 0, count: b * tq * qw)
        let probs = FloatBuffer(repeating: 0, count: b * heads * tq * t)
        let mask = dropout > 0 ? FloatBuffer(repeating: 0, count: probs.count) : nil
        let qp = q.values.baseAddress!, kp = k.values.baseAddress!, vp = v.values.baseAddress!
        let cp = ctx.mutable.baseAddress!, pp = probs.mutable.baseAddress!, mp = mask?.mutable.baseAddress
        let work = UncheckedSendable((qp, kp, vp, cp, pp, mp))
        let scale = scale, causal = causal, heads = heads, keep = 1 / (1 - dropout)
        // One job per (sequence, head); in parallel only when BLAS runs on the calling thread.
        let job = { (j: Int) in
            let (qp, kp, vp, cp, pp, mp) = work.value
            let s = j / heads, head = j % heads, len = lengths[s], g = head / group, mq = min(tq, len)
            guard len > 0 else { return }
            let p = pp + (s * heads + head) * tq * t
            Linalg.gemm(m: mq, n: len, k: dh, alpha: scale, a: qp + s * tq * qw + head * dh, lda: qw,
                        b: kp + s * t * kw + g * dh, ldb: kw, transB: true, c: p, ldc: t)
            if causal { for r in 0..<mq { for c in (r + 1)..<max(len, r + 1) { p[r * t + c] = -.infinity } } }
            for r in 0..<mq { Activation.softmaxRows(p + r * t, rows: 1, width: len) }
            var used = UnsafePointer(p)
            let dropped = UnsafeMutablePointer<Float>.allocate(capacity: mp == nil ? 0 : mq * t)
            defer { dropped.deallocate() }
            if let mp {
                var rng = SeededRNG(seed: seed, key: "attention/\(j)")
                let m = mp + (s * heads + head) * tq * t
                for r in 0..<mq {
                    for c in 0..<len {
                        let f: Float = rng.nextUnitFloat() < dropout ? 0 : keep
                        m[r * t + c] = f; dropped[r * t + c] = p[r * t + c] * f
                    }
                }
                used = UnsafePointer(dropped)
            }
            Linalg.gemm(m: mq, n: dh, k: len, a: used, lda: t, b: vp + s * t * kw + g * dh, ldb: kw,
                        c: cp + s * tq * qw + head * dh, ldc: qw)
        }
        if Linalg.blasIsSingleThreaded { parallelEach(b * heads, job) } else { for j in 0..<(b * heads) { job(j) } }
        return (ctx, Saved(probs: probs, dropScale: mask))
    }

    /// Given dL/dcontext, with P′ = P ⊙ dropout scale: dV = P′ᵀ·dO, dP = (dO·Vᵀ) ⊙ scale,
    /// dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = scale·dS·K, dK = scale·dSᵀ·Q (summed over the query heads
    /// sharing a key/value head).
    public func backward(_ dCtx: FloatBuffer, q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, saved: Saved,
                         batch b: Int, length t: Int, lengths: [Int], queries: Int? = nil) -> (dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer) {
        let qw = heads * headDim, kw = kvHeads * headDim, group = heads / kvHeads, dh = headDim, tq = queries ?? t
        let dq = FloatBuffer(repeating: 0, count: b * tq * qw)
        let dk = FloatBuffer(repeating: 0, count: b * t * kw), dv = FloatBuffer(repeating: 0, count: b * t * kw)
        let qp = q.values.baseAddress!, kp = k.values.baseAddress!, vp = v.values.baseAddress!, op = dCtx.values.baseAddress!
        let dqp = dq.mutable.baseAddress!, dkp = dk.mutable.baseAddress!, dvp = dv.mutable.baseAddress!
        let pp = saved.probs.values.baseAddress!, mp = saved.dropScale?.values.baseAddress
        let work = UncheckedSendable((qp, kp, vp, op, dqp, dkp, dvp, pp, mp))
        let scale = scale, kvHeads = kvHeads
        // One job per (sequence, key/value head): the query heads sharing it add into the same dK, dV.
        let job = { (j: Int) in
            let (qp, kp, vp, op, dqp, dkp, dvp, pp, mp) = work.value
            let s = j / kvHeads, g = j % kvHeads, len = lengths[s], mq = min(tq, len)
            guard len > 0 else { return }
            let ds = UnsafeMutablePointer<Float>.allocate(capacity: mq * len)
            let dropped = UnsafeMutablePointer<Float>.allocate(capacity: mp == nil ? 0 : mq * t)
            defer { ds.deallocate(); dropped.deallocate() }
            for head in (g * group)..<((g + 1) * group) {
                let p = pp + (s * heads + head) * tq * t
                let m = mp.map { $0 + (s * heads + head) * tq * t }
                var used = p
                if let m {
                    for r in 0..<mq { for c in 0..<len { dropped[r * t + c] = p[r * t + c] * m[r * t + c] } }
                    used = UnsafePointer(dropped)
                }
                let dO = op + s * tq * qw + head * dh
                // dV[g] += P′ᵀ · dO
                Linalg.gemm(m: len, n: dh, k: mq, a: used, lda: t, transA: true, b: dO, ldb: qw,
                            beta: 1, c: dvp + s * t * kw + g * dh, ldc: kw)
                // dP = (dO · Vᵀ) ⊙ scale, then dS in place.
                Linalg.gemm(m: mq, n: len, k: dh, a: dO, lda: qw, b: vp + s * t * kw + g * dh, ldb: kw, transB: true,
                            c: ds, ldc: len)
                for r in 0..<mq {
                    let pr = p + r * t, dr = ds + r * len
                    if let m { for c in 0..<len { dr[c] *= m[r * t + c] } }
                    var dot: Float = 0
                    for c in 0..<len { dot += pr[c] * dr[c] }
                    for c in 0..<len { dr[c] = pr[c] * (dr[c] - dot) }
                }
                Linalg.gemm(m: mq, n: dh, k: len, alpha: scale, a: ds, lda: len, b: kp + s * t * kw + g * dh, ldb: kw,
                            c: dqp + s * tq * qw + head * dh, ldc: qw)
                Linalg.gemm(m: len, n: dh, k: mq, alpha: scale, a: ds, lda: len, transA: true, b: qp + s * tq * qw + head * dh, ldb: qw,
                            beta: 1, c: dkp + s * t * kw + g * dh, ldc: kw)
            }
        }
        if Linalg.blasIsSingleThreaded { parallelEach(b * kvHeads, job) } else { for j in 0..<(b * kvHeads) { job(j) } }
        return (dq, dk, dv)
    }
}
