import GraftTensor

/// Gradient buffers of a linear layer's trainable parts, accumulated (+=) by `Linear.backward`; a nil
/// part is frozen. LoRA trains `a`/`b` (and DoRA `magnitude`); a classification head trains `weight`/`bias`.
public final class LinearGradients: @unchecked Sendable {
    public let a: FloatBuffer?, b: FloatBuffer?, magnitude: FloatBuffer?
    public let weight: FloatBuffer?, bias: FloatBuffer?

    public init(a: FloatBuffer? = nil, b: FloatBuffer? = nil, magnitude: FloatBuffer? = nil,
                weight: FloatBuffer? = nil, bias: FloatBuffer? = nil) {
        self.a = a; self.b = b; self.magnitude = magnitude; self.weight = weight; self.bias = bias
    }

    /// Zero gradients for a layer's low-rank update (and DoRA magnitude) or its full weight and bias.
    public static func zeros(for layer: Linear, lowRank: Bool, full: Bool) -> LinearGradients {
        func z(_ n: Int) -> FloatBuffer { FloatBuffer(repeating: 0, count: n) }
        let lr = lowRank ? layer.lowRank : nil
        return LinearGradients(a: lr.map { z($0.a.count) }, b: lr.map { z($0.b.count) }, magnitude: lr?.magnitude.map { z($0.count) },
                               weight: full ? z(layer.weight.count) : nil, bias: full ? layer.bias.map { z($0.count) } : nil)
    }
}

extension Linear {
    /// What `backward` needs from the forward pass.
    public struct Saved: @unchecked Sendable {
        let x: FloatBuffer
        /// Dropout scale per input element (0 or 1/(1−p)) on the low-rank branch, when dropout ran.
        let dropScale: FloatBuffer?
        /// x̃·Aᵀ [rows × rank] (x̃ = the low-rank branch's input).
        let t: FloatBuffer?
        /// DoRA: g = m/‖W + s·B·A‖ [out] and x̃·Wᵀ + s·t·Bᵀ [rows × out].
        let doraScale: FloatBuffer?, doraPre: FloatBuffer?
    }

    /// y = x·Wᵀ + b + the low-rank update, keeping what `backward` needs. `rng` draws the LoRA dropout
    /// mask (none when nil or `loraDropout` is 0). With `tokens`, the product with the frozen weight runs
    /// over those rows only and the padding rows' get zeros (see `TokenRows`).
    public func forwardTraining(_ x: FloatBuffer, rows: Int, rng: UnsafeMutablePointer<SeededRNG>?, tokens: TokenRows? = nil)
        -> (y: FloatBuffer, saved: Saved) {
        let y = FloatBuffer(count: rows * outFeatures)
        let yp = y.mutable.baseAddress!
        frozenProduct(x.values.baseAddress!, rows: rows, into: yp, backward: false, tokens: tokens)
        guard let lr = lowRank else { return (y, Saved(x: x, dropScale: nil, t: nil, doraScale: nil, doraPre: nil)) }
        // The low-rank branch's input: x, or x with dropout.
        var xt = x, dropScale: FloatBuffer? = nil
        if loraDropout > 0, let rng {
            let n = rows * inFeatures, keep = 1 - loraDropout, s = FloatBuffer(count: n), d = FloatBuffer(count: n)
            let sv = s.mutable, dv = d.mutable, xv = x.values
            for i in 0..<n {
                let m: Float = rng.pointee.nextUnitFloat() < loraDropout ? 0 : 1 / keep
                sv[i] = m; dv[i] = xv[i] * m
            }
            xt = d; dropScale = s
        }
        let t = FloatBuffer(count: rows * lr.rank)
        Linalg.gemm(m: rows, n: lr.rank, k: inFeatures, a: xt.values.baseAddress!, b: lr.a.values.baseAddress!, transB: true,
                    c: t.mutable.baseAddress!)
        guard let m = lr.magnitude else {
            Linalg.gemm(m: rows, n: outFeatures, k: lr.rank, alpha: lr.scale, a: t.values.baseAddress!, b: lr.b.values.baseAddress!,
                        transB: true, beta: 1, c: yp)
            return (y, Saved(x: x, dropScale: dropScale, t: t, doraScale: nil, doraPre: nil))
        }
        // DoRA: pre = x̃·Wᵀ + s·t·Bᵀ; y = (x·Wᵀ + b) − x̃·Wᵀ + g ⊙ pre.
        let g = doraScale(lr, magnitude: m)
        let xw = FloatBuffer(count: rows * outFeatures)
        Linalg.gemm(m: rows, n: outFeatures, k: inFeatures, a: xt.values.baseAddress!, b: weight.values.baseAddress!, transB: true,
                    c: xw.mutable.baseAddress!)
        let pre = FloatBuffer(count: rows * outFeatures)
        let pp = pre.mutable.baseAddress!
        pp.update(from: xw.values.baseAddress!, count: pre.count)
        Linalg.gemm(m: rows, n: outFeatures, k: lr.rank, alpha: lr.scale, a: t.values.baseAddress!, b: lr.b.values.baseAddress!,
                    transB: true, beta: 1, c: pp)
        let gv = g.values
        for r in 0..<rows {
            for j in 0..<outFeatures { let i = r * outFeatures + j; yp[i] += gv[j] * pp[i] - xw[i] }
        }
        return (y, Saved(x: x, dropScale: dropScale, t: t, doraScale: g, doraPre: pre))
    }

    /// DoRA's g = m / ‖W + s·B·A‖ per output row (norms of the current weights; constants for backward).
    func doraScale(_ lr: LowRankUpdate, magnitude m: FloatBuffer) -> FloatBuffer {
        let w = FloatBuffer(count: outFeatures * inFeatures)
        w.mutable.baseAddress!.update(from: weight.values.baseAddress!, count: w.count)
        Linalg.gemm(m: outFeatures, n: inFeatures, k: lr.rank, alpha: lr.scale, a: lr.b.values.baseAddress!, b: lr.a.values.baseAddress!,
                    beta: 1, c: w.mutable.baseAddress!)
        let g = FloatBuffer(count: outFeatures), wv = w.values
        for j in 0..<outFeatures {
            var ss: Float = 0
            for i in 0..<inFeatures { let v = wv[j * inFeatures + i]; ss += v * v }
            g.mutable[j] = m[j] / ss.squareRoot()
        }
        return g
    }

    /// Backward of `forwardTraining`: accumulates the trainable parts' gradients into `gradients` and
    /// returns dL/dx [rows × in] when `needInput` (nil otherwise, saving the largest product). `tokens` as
    /// in the forward pass (the padding rows' dy are zeros: their dx are too).
    public func backward(_ dy: FloatBuffer, saved s: Saved, rows: Int, needInput: Bool = true, tokens: TokenRows? = nil) -> FloatBuffer? {
        let dyp = dy.values.baseAddress!
        if let g = gradients {
            if let gb = g.bias {
                let gv = gb.mutable
                for r in 0..<rows { for j in 0..<outFeatures { gv[j] += dyp[r * outFeatures + j] } }
            }
            if let gw = g.weight {
                Linalg.gemm(m: outFeatures, n: inFeatures, k: rows, a: dyp, transA: true, b: s.x.values.baseAddress!,
                            beta: 1, c: gw.mutable.baseAddress!)
            }
        }
        var dyLow = dy  // the gradient reaching the low-rank branch's output (g ⊙ dy for DoRA)
        var u: FloatBuffer? = nil
        if let lr = lowRank, let t = s.t {
            if let gScale = s.doraScale, let pre = s.doraPre {
                let scaled = FloatBuffer(count: rows * outFeatures)
                let sv = scaled.mutable, gv = gScale.values, pv = pre.values
                let dm = gradients?.magnitude?.mutable
                for r in 0..<rows {
                    for j in 0..<outFeatures {
                        let d = dyp[r * outFeatures + j]
                        sv[r * outFeatures + j] = d * gv[j]
                        // ∂y/∂m_j = pre_j / ‖·‖_j = pre_j · g_j / m_j
                        if let dm { dm[j] += d * pv[r * outFeatures + j] * gv[j] / lr.magnitude![j] }
                    }
                }
                dyLow = scaled
            }
            let xt = s.dropScale.map { scale -> FloatBuffer in
                let d = FloatBuffer(count: rows * inFeatures), dv = d.mutable, xv = s.x.values, sv = scale.values
                for i in 0..<dv.count { dv[i] = xv[i] * sv[i] }
                return d
            } ?? s.x
            if let gB = gradients?.b {
                Linalg.gemm(m: outFeatures, n: lr.rank, k: rows, alpha: lr.scale, a: dyLow.values.baseAddress!, transA: true,
                            b: t.values.baseAddress!, beta: 1, c: gB.mutable.baseAddress!)
            }
            let uu = FloatBuffer(count: rows * lr.rank)
            Linalg.gemm(m: rows, n: lr.rank, k: outFeatures, a: dyLow.values.baseAddress!, b: lr.b.values.baseAddress!,
                        c: uu.mutable.baseAddress!)
            if let gA = gradients?.a {
                Linalg.gemm(m: lr.rank, n: inFeatures, k: rows, alpha: lr.scale, a: uu.values.baseAddress!, transA: true,
                            b: xt.values.baseAddress!, beta: 1, c: gA.mutable.baseAddress!)
            }
            u = uu
        }
        guard needInput else { return nil }
        let dx = FloatBuffer(count: rows * inFeatures)
        let dxp = dx.mutable.baseAddress!
        frozenProduct(dyp, rows: rows, into: dxp, backward: true, tokens: tokens)
        guard let lr = lowRank, let u else { return dx }
        // The low-rank branch's input gradient: s·u·A (+ DoRA's (g−1)⊙dy through W), times the dropout mask.
        let branch = FloatBuffer(count: rows * inFeatures)
        let bp = branch.mutable.baseAddress!
        Linalg.gemm(m: rows, n: inFeatures, k: lr.rank, alpha: lr.scale, a: u.values.baseAddress!, b: lr.a.values.baseAddress!, c: bp)
        if let gScale = s.doraScale {
            let d1 = FloatBuffer(count: rows * outFeatures), dv = d1.mutable, gv = gScale.values
            for r in 0..<rows { for j in 0..<outFeatures { dv[r * outFeatures + j] = dyp[r * outFeatures + j] * (gv[j] - 1) } }
            Linalg.gemm(m: rows, n: inFeatures, k: outFeatures, a: d1.values.baseAddress!, b: weight.values.baseAddress!, beta: 1, c: bp)
        }
        let n = rows * inFeatures
        if let scale = s.dropScale {
            let sv = scale.values
            for i in 0..<n { dxp[i] += bp[i] * sv[i] }
        } else {
            for i in 0..<n { dxp[i] += bp[i] }
        }
        return dx
    }

    /// The product with the frozen weight — forward x·Wᵀ + b into `c` [rows × out], or backward dy·W
    /// [rows × in] — over the packed copies where there are some (`packForTraining`), else BLAS. With
    /// `tokens` it multiplies only those rows, gathered into one dense product, and writes zeros to the
    /// others: each row's result is the same as in the full product (rows are independent), so the
    /// tokens' values do not change.
    func frozenProduct(_ a: UnsafePointer<Float>, rows: Int, into c: UnsafeMutablePointer<Float>, backward: Bool, tokens: TokenRows?) {
        let (k, n) = backward ? (outFeatures, inFeatures) : (inFeatures, outFeatures)
        if let tokens, tokens.count < rows {
            precondition(tokens.rows == rows, "token rows for \(tokens.rows) rows used on \(rows)")
            let dense = FloatBuffer(count: tokens.count * k), out = FloatBuffer(count: tokens.count * n)
            tokens.gather(a, width: k, into: dense.mutable.baseAddress!)
            frozenProduct(dense.values.baseAddress!, rows: tokens.count, into: out.mutable.baseAddress!, backward: backward, tokens: nil)
            tokens.scatter(out.values.baseAddress!, width: n, into: c)
            return
        }
        if backward {
            if let packed = f32Training?.backward {
                packed.multiply(a, m: rows, into: c)
            } else if let packed = bf16?.backward {
                packed.multiply(a, m: rows, into: c)
            } else {
                Linalg.gemmParallel(m: rows, n: inFeatures, k: outFeatures, a: a, b: weight.values.baseAddress!, c: c)
            }
            return
        }
        if let packed = f32Training?.forward {
            packed.multiply(a, m: rows, into: c, bias: bias?.values.baseAddress)
            return
        }
        if let bias { for r in 0..<rows { (c + r * outFeatures).update(from: bias.values.baseAddress!, count: outFeatures) } }
        if let packed = bf16?.forward {
            packed.multiply(a, m: rows, into: c, beta: bias == nil ? 0 : 1)
        } else {
            Linalg.gemmParallel(m: rows, n: outFeatures, k: inFeatures, a: a, b: weight.values.baseAddress!, transB: true,
                                beta: bias == nil ? 0 : 1, c: c)
        }
    }
}

/// The rows of a right-padded batch [batch × length] that hold tokens. The products with frozen weights
/// run over these only: on the demo's corpora, in random batches of 32, 23–63 % of the rows are padding.
/// Nothing reads a padding row's value but attention, which skips keys past each sequence's length, and
/// the low-rank gradients' sums, where the padding rows' gradient is exactly zero — so the tokens' values
/// and every gradient are the same to the bit with or without (a test holds it).
public struct TokenRows: Sendable {
    /// Row ranges in order, one per non-empty sequence.
    public let ranges: [Range<Int>]
    /// Rows that hold tokens, and rows in all.
    public let count: Int, rows: Int

    /// nil when no sequence is padded (nothing to skip).
    public init?(lengths: [Int], length t: Int) {
        guard lengths.contains(where: { $0 < t }) else { return nil }
        ranges = lengths.enumerated().compactMap { s, len in len > 0 ? (s * t)..<(s * t + min(len, t)) : nil }
        count = ranges.reduce(0) { $0 + $1.count }
        rows = lengths.count * t
    }

    /// Copies the token rows of `source` [rows × width] into `dense` [count × width].
    func gather(_ source: UnsafePointer<Float>, width: Int, into dense: UnsafeMutablePointer<Float>) {
        var at = 0
        for r in ranges {
            (dense + at * width).update(from: source + r.lowerBound * width, count: r.count * width)
            at += r.count
        }
    }

    /// Copies `dense` [count × width] back into the token rows of `target` [rows × width], zeros into the rest.
    func scatter(_ dense: UnsafePointer<Float>, width: Int, into target: UnsafeMutablePointer<Float>) {
        var at = 0, next = 0
        for r in ranges {
            (target + next * width).update(repeating: 0, count: (r.lowerBound - next) * width)
            (target + r.lowerBound * width).update(from: dense + at * width, count: r.count * width)
            at += r.count; next = r.upperBound
        }
        (target + next * width).update(repeating: 0, count: (rows - next) * width)
    }
}
