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

    /// Keys and values every sequence's queries attend to before the sequence's own (prefix tuning): the
    /// same `count` rows for every sequence, `stride` floats apart, kvHeads·headDim wide, unmasked (a
    /// causal query sees them all).
    public struct Prefix: @unchecked Sendable {
        public let keys: UnsafePointer<Float>, values: UnsafePointer<Float>
        public let count: Int, stride: Int
        public init(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, count: Int, stride: Int) {
            self.keys = keys; self.values = values; self.count = count; self.stride = stride
        }
    }

    /// q [b·tq × heads·dh], k and v [b·t × kvHeads·dh] → context [b·tq × heads·dh]. The queries are
    /// each sequence's first `queries` positions (tq; default all t) — a classifier reading only the
    /// first token needs just that one query in the last layer. `prefix` adds keys and values ahead of
    /// every sequence's (probabilities then span prefix + t columns). `dropout` > 0 drops probabilities
    /// with masks keyed by (`seed`, sequence, head): the same whatever the thread count.
    public func forwardTraining(q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, batch b: Int, length t: Int,
                                lengths: [Int], queries: Int? = nil, prefix: Prefix? = nil, dropout: Float = 0,
                                seed: UInt64 = 0) -> (ctx: FloatBuffer, saved: Saved) {
        let qw = heads * headDim, kw = kvHeads * headDim, group = heads / kvHeads, dh = headDim, tq = queries ?? t
        let n = prefix?.count ?? 0, tk = n + t  // key columns: the prefix's, then the sequence's
        precondition(tq == t || !causal, "query subsets are for bidirectional attention")
        let ctx = FloatBuffer(repeating: 0, count: b * tq * qw)
        let probs = FloatBuffer(repeating: 0, count: b * heads * tq * tk)
        let mask = dropout > 0 ? FloatBuffer(repeating: 0, count: probs.count) : nil
        let qp = q.values.baseAddress!, kp = k.values.baseAddress!, vp = v.values.baseAddress!
        let cp = ctx.mutable.baseAddress!, pp = probs.mutable.baseAddress!, mp = mask?.mutable.baseAddress
        let work = UncheckedSendable((qp, kp, vp, cp, pp, mp, prefix))
        let scale = scale, causal = causal, heads = heads, keep = 1 / (1 - dropout)
        // One job per (sequence, head); in parallel only when BLAS runs on the calling thread.
        let job = { (j: Int) in
            let (qp, kp, vp, cp, pp, mp, prefix) = work.value
            let s = j / heads, head = j % heads, len = lengths[s], g = head / group, mq = min(tq, len), keys = n + len
            guard len > 0 else { return }
            let p = pp + (s * heads + head) * tq * tk
            let qs = qp + s * tq * qw + head * dh
            if let prefix {
                Linalg.gemm(m: mq, n: n, k: dh, alpha: scale, a: qs, lda: qw, b: prefix.keys + g * dh, ldb: prefix.stride, transB: true,
                            c: p, ldc: tk)
            }
            Linalg.gemm(m: mq, n: len, k: dh, alpha: scale, a: qs, lda: qw, b: kp + s * t * kw + g * dh, ldb: kw, transB: true,
                        c: p + n, ldc: tk)
            if causal { for r in 0..<mq { for c in (n + r + 1)..<max(keys, n + r + 1) { p[r * tk + c] = -.infinity } } }
            for r in 0..<mq { Activation.softmaxRows(p + r * tk, rows: 1, width: keys) }
            var used = UnsafePointer(p)
            let dropped = UnsafeMutablePointer<Float>.allocate(capacity: mp == nil ? 0 : mq * tk)
            defer { dropped.deallocate() }
            if let mp {
                var rng = SeededRNG(seed: seed, key: "attention/\(j)")
                let m = mp + (s * heads + head) * tq * tk
                for r in 0..<mq {
                    for c in 0..<keys {
                        let f: Float = rng.nextUnitFloat() < dropout ? 0 : keep
                        m[r * tk + c] = f; dropped[r * tk + c] = p[r * tk + c] * f
                    }
                }
                used = UnsafePointer(dropped)
            }
            let out = cp + s * tq * qw + head * dh
            if let prefix {
                Linalg.gemm(m: mq, n: dh, k: n, a: used, lda: tk, b: prefix.values + g * dh, ldb: prefix.stride, c: out, ldc: qw)
            }
            Linalg.gemm(m: mq, n: dh, k: len, a: used + n, lda: tk, b: vp + s * t * kw + g * dh, ldb: kw,
                        beta: n > 0 ? 1 : 0, c: out, ldc: qw)
        }
        if Linalg.blasIsSingleThreaded { parallelEach(b * heads, job) } else { for j in 0..<(b * heads) { job(j) } }
        return (ctx, Saved(probs: probs, dropScale: mask))
    }

    /// Given dL/dcontext, with P′ = P ⊙ dropout scale: dV = P′ᵀ·dO, dP = (dO·Vᵀ) ⊙ scale,
    /// dS = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = scale·dS·K, dK = scale·dSᵀ·Q (summed over the query heads
    /// sharing a key/value head). With a `prefix`, also its keys' and values' gradients [count × kvHeads·dh],
    /// summed over the sequences.
    public func backward(_ dCtx: FloatBuffer, q: FloatBuffer, k: FloatBuffer, v: FloatBuffer, saved: Saved,
                         batch b: Int, length t: Int, lengths: [Int], queries: Int? = nil, prefix: Prefix? = nil)
        -> (dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer, prefix: (dk: FloatBuffer, dv: FloatBuffer)?) {
        let qw = heads * headDim, kw = kvHeads * headDim, group = heads / kvHeads, dh = headDim, tq = queries ?? t
        let n = prefix?.count ?? 0, tk = n + t
        let dq = FloatBuffer(repeating: 0, count: b * tq * qw)
        let dk = FloatBuffer(repeating: 0, count: b * t * kw), dv = FloatBuffer(repeating: 0, count: b * t * kw)
        // The prefix's gradients per sequence (each job writes its own rows), summed at the end.
        let dpk = FloatBuffer(repeating: 0, count: b * n * kw), dpv = FloatBuffer(repeating: 0, count: b * n * kw)
        let qp = q.values.baseAddress!, kp = k.values.baseAddress!, vp = v.values.baseAddress!, op = dCtx.values.baseAddress!
        let dqp = dq.mutable.baseAddress!, dkp = dk.mutable.baseAddress!, dvp = dv.mutable.baseAddress!
        let pp = saved.probs.values.baseAddress!, mp = saved.dropScale?.values.baseAddress
        let work = UncheckedSendable((qp, kp, vp, op, dqp, dkp, dvp, pp, mp, prefix, dpk.mutable.baseAddress!, dpv.mutable.baseAddress!))
        let scale = scale, kvHeads = kvHeads
        // One job per (sequence, key/value head): the query heads sharing it add into the same dK, dV.
        let job = { (j: Int) in
            let (qp, kp, vp, op, dqp, dkp, dvp, pp, mp, prefix, dpkp, dpvp) = work.value
            let s = j / kvHeads, g = j % kvHeads, len = lengths[s], mq = min(tq, len), keys = n + len
            guard len > 0 else { return }
            let ds = UnsafeMutablePointer<Float>.allocate(capacity: mq * keys)
            let dropped = UnsafeMutablePointer<Float>.allocate(capacity: mp == nil ? 0 : mq * tk)
            defer { ds.deallocate(); dropped.deallocate() }
            for head in (g * group)..<((g + 1) * group) {
                let p = pp + (s * heads + head) * tq * tk
                let m = mp.map { $0 + (s * heads + head) * tq * tk }
                var used = p
                if let m {
                    for r in 0..<mq { for c in 0..<keys { dropped[r * tk + c] = p[r * tk + c] * m[r * tk + c] } }
                    used = UnsafePointer(dropped)
                }
                let dO = op + s * tq * qw + head * dh, qs = qp + s * tq * qw + head * dh
                // dV[g] += P′ᵀ · dO (the prefix's columns into its own gradient)
                Linalg.gemm(m: len, n: dh, k: mq, a: used + n, lda: tk, transA: true, b: dO, ldb: qw,
                            beta: 1, c: dvp + s * t * kw + g * dh, ldc: kw)
                // dP = (dO · Vᵀ) ⊙ scale, then dS in place.
                if let prefix {
                    Linalg.gemm(m: n, n: dh, k: mq, a: used, lda: tk, transA: true, b: dO, ldb: qw,
                                beta: 1, c: dpvp + s * n * kw + g * dh, ldc: kw)
                    Linalg.gemm(m: mq, n: n, k: dh, a: dO, lda: qw, b: prefix.values + g * dh, ldb: prefix.stride, transB: true,
                                c: ds, ldc: keys)
                }
                Linalg.gemm(m: mq, n: len, k: dh, a: dO, lda: qw, b: vp + s * t * kw + g * dh, ldb: kw, transB: true,
                            c: ds + n, ldc: keys)
                for r in 0..<mq {
                    let pr = p + r * tk, dr = ds + r * keys
                    if let m { for c in 0..<keys { dr[c] *= m[r * tk + c] } }
                    var dot: Float = 0
                    for c in 0..<keys { dot += pr[c] * dr[c] }
                    for c in 0..<keys { dr[c] = pr[c] * (dr[c] - dot) }
                }
                let dqs = dqp + s * tq * qw + head * dh
                if let prefix {
                    Linalg.gemm(m: mq, n: dh, k: n, alpha: scale, a: ds, lda: keys, b: prefix.keys + g * dh, ldb: prefix.stride,
                                c: dqs, ldc: qw)
                    Linalg.gemm(m: n, n: dh, k: mq, alpha: scale, a: ds, lda: keys, transA: true, b: qs, ldb: qw,
                                beta: 1, c: dpkp + s * n * kw + g * dh, ldc: kw)
                }
                Linalg.gemm(m: mq, n: dh, k: len, alpha: scale, a: ds + n, lda: keys, b: kp + s * t * kw + g * dh, ldb: kw,
                            beta: n > 0 ? 1 : 0, c: dqs, ldc: qw)
                Linalg.gemm(m: len, n: dh, k: mq, alpha: scale, a: ds + n, lda: keys, transA: true, b: qs, ldb: qw,
                            beta: 1, c: dkp + s * t * kw + g * dh, ldc: kw)
            }
        }
        if Linalg.blasIsSingleThreaded { parallelEach(b * kvHeads, job) } else { for j in 0..<(b * kvHeads) { job(j) } }
        guard prefix != nil else { return (dq, dk, dv, nil) }
        let sk = FloatBuffer(repeating: 0, count: n * kw), sv = FloatBuffer(repeating: 0, count: n * kw)
        for s in 0..<b {
            for i in 0..<(n * kw) { sk.mutable[i] += dpk.values[s * n * kw + i]; sv.mutable[i] += dpv.values[s * n * kw + i] }
        }
        return (dq, dk, dv, (sk, sv))
    }
}
