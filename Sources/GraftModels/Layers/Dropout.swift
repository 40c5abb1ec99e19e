import GraftTensor

/// Inverted dropout, as PyTorch's: each element is kept with probability 1 − p and scaled by 1/(1 − p).
/// The mask is drawn in fixed 64K-element chunks, each from its own generator keyed by (seed, chunk), so it
/// does not depend on the thread count; the returned scale factors (0 or 1/(1 − p)) are the backward pass.
public enum Dropout {
    /// Applies dropout to `x` in place and returns the per-element scale, or nil when p is 0.
    public static func apply(_ x: FloatBuffer, p: Float, seed: UInt64) -> FloatBuffer? {
        guard p > 0 else { return nil }
        let n = x.count, chunk = 1 << 16, keep = 1 / (1 - p)
        let scale = FloatBuffer(count: n)
        let xv = x.mutable, sv = scale.mutable
        parallelEach((n + chunk - 1) / chunk) { c in
            var rng = SeededRNG(seed: seed, key: "dropout/\(c)")
            for i in (c * chunk)..<min(n, (c + 1) * chunk) {
                let m: Float = rng.nextUnitFloat() < p ? 0 : keep
                sv[i] = m; xv[i] *= m
            }
        }
        return scale
    }

    /// Backward: dy ⊙ scale, in place.
    public static func backward(_ dy: FloatBuffer, scale: FloatBuffer?) {
        guard let scale else { return }
        let d = dy.mutable, s = scale.values
        parallelFor(count: d.count, minChunk: 1 << 15) { r in for i in r { d[i] *= s[i] } }
    }
}
