import GraftTensor

/// Gradient buffers of a linear layer's own weight and bias when they train (a classification head,
/// full fine-tuning), accumulated (+=) by `Linear.backward`; a nil part is frozen. Adapter updates keep
/// their gradients themselves (`UpdateParameter.gradient`).
public final class LinearGradients: @unchecked Sendable {
    public let weight: FloatBuffer?, bias: FloatBuffer?

    public init(weight: FloatBuffer? = nil, bias: FloatBuffer? = nil) {
        self.weight = weight; self.bias = bias
    }

    /// Zero gradients for a layer's full weight and its bias.
    public static func zeros(for layer: Linear) -> LinearGradients {
        LinearGradients(weight: FloatBuffer(repeating: 0, count: layer.weight.count),
                        bias: layer.bias.map { FloatBuffer(repeating: 0, count: $0.count) })
    }
}

extension Linear {
    /// What `backward` needs from the forward pass: the input, and what the attached update saved.
    public struct Saved: @unchecked Sendable {
        let x: FloatBuffer
        let update: AnyObject?
    }

    /// y = x·Wᵀ + b with the attached update, keeping what `backward` needs. `rng` draws the update's
    /// training-time randomness (LoRA dropout; none when nil). With `tokens`, the products with the
    /// frozen weight run over those rows only and the padding rows get zeros (see `TokenRows`).
    public func forwardTraining(_ x: FloatBuffer, rows: Int, rng: UnsafeMutablePointer<SeededRNG>?, tokens: TokenRows? = nil)
        -> (y: FloatBuffer, saved: Saved) {
        precondition(updates.count <= 1, "training runs one adapter update per layer (this one has \(updates.count))")
        guard let u = updates.first else {
            let y = FloatBuffer(count: rows * outFeatures)
            frozenProduct(x.values.baseAddress!, rows: rows, into: y.mutable.baseAddress!, backward: false, tokens: tokens)
            return (y, Saved(x: x, update: nil))
        }
        let (y, saved) = u.forward(x, rows: rows, base: frozen(inference: false, tokens: tokens), rng: rng)
        return (y, Saved(x: x, update: saved))
    }

    /// Backward of `forwardTraining`: accumulates the weight's and bias's gradients into `gradients`
    /// and the update's into its own, and returns dL/dx [rows × in] when `needInput` (nil otherwise,
    /// saving the largest product). `tokens` as in the forward pass (the padding rows' dy are zeros:
    /// their dx are too).
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
        if let u = updates.first {
            return u.backward(dy, x: s.x, saved: s.update, rows: rows, base: frozen(inference: false, tokens: tokens), needInput: needInput)
        }
        guard needInput else { return nil }
        let dx = FloatBuffer(count: rows * inFeatures)
        frozenProduct(dyp, rows: rows, into: dx.mutable.baseAddress!, backward: true, tokens: tokens)
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
