import GraftTensor

/// (IA)³ on one linear layer (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and
/// Cheaper than In-Context Learning"; PEFT `ia3.Linear`): a learned vector l rescales the layer's output,
/// y = (x·Wᵀ + b) ⊙ l (keys and values: l [out], the bias scaled too), or, on a feed-forward layer, its
/// input, y = (x ⊙ l)·Wᵀ + b (l [in]). Forward and backward side by side.
public final class IA3Update: LayerUpdate, @unchecked Sendable {
    /// l: [in] on a feed-forward layer, else [out]; PEFT starts it at ones.
    public let scaling: FloatBuffer
    public let feedforward: Bool
    private var gradient: FloatBuffer?

    public init(scaling: FloatBuffer, feedforward: Bool) {
        self.scaling = scaling; self.feedforward = feedforward
    }

    public var method: String { "ia3" }

    public func fit(module: String, inFeatures: Int, outFeatures: Int) -> String? {
        let want = feedforward ? inFeatures : outFeatures
        return scaling.count == want ? nil : "scales \(scaling.count) \(feedforward ? "inputs" : "outputs")"
    }

    /// PEFT stores l as [1, in] (feed-forward) or [out, 1].
    public var parameters: [UpdateParameter] {
        [UpdateParameter(suffix: "ia3_l", value: scaling, gradient: gradient,
                         shape: feedforward ? [1, scaling.count] : [scaling.count, 1], decay: true)]
    }

    public func makeTrainable() { gradient = FloatBuffer(repeating: 0, count: scaling.count) }

    /// Each row of `m` [rows × l.count] times l, into a new buffer.
    private func scaled(_ m: FloatBuffer, rows: Int) -> FloatBuffer { scaledRows(m, rows: rows, by: scaling) }

    /// dl_j += Σ_rows g[r, j] · v[r, j].
    private func accumulate(_ g: FloatBuffer, _ v: FloatBuffer, rows: Int) {
        guard let gradient else { return }
        let n = scaling.count, gl = gradient.mutable, gv = g.values, vv = v.values
        for r in 0..<rows { for j in 0..<n { gl[j] += gv[r * n + j] * vv[r * n + j] } }
    }

    final class Saved {
        /// Output scaling: the frozen layer's output z = x·Wᵀ + b, which dl needs.
        let z: FloatBuffer?
        init(z: FloatBuffer?) { self.z = z }
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        if feedforward { return (base.forward(scaled(x, rows: rows), rows: rows), Saved(z: nil)) }
        let z = base.forward(x, rows: rows)
        return (scaled(z, rows: rows), Saved(z: gradient == nil ? nil : z))
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        if feedforward {
            // y = base(x ⊙ l): g = dL/d(x ⊙ l) = dy·W; dl = Σ g ⊙ x; dx = g ⊙ l.
            guard needInput || gradient != nil else { return nil }
            let g = base.inputGradient(dy, rows: rows)
            accumulate(g, x, rows: rows)
            return needInput ? scaled(g, rows: rows) : nil
        }
        // y = z ⊙ l: dl = Σ dy ⊙ z; dx = (dy ⊙ l)·W.
        if let z = (saved as? Saved)?.z { accumulate(dy, z, rows: rows) }
        return needInput ? base.inputGradient(scaled(dy, rows: rows), rows: rows) : nil
    }
}
