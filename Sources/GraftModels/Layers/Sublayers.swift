import GraftTensor

/// How both models call the sublayer seam (`SublayerUpdate`: bottleneck adapters) at a layer's attention
/// and feed-forward sites — once, here, for BERT and Llama.
extension SublayerUpdates {
    /// The term the update at (`layer`, `site`) adds for the sublayer's output `h` and its residual `r`,
    /// summed into `h`; what it kept for backward (nil without an update, or when not `keep`). `norm` is
    /// the sublayer's own norm (BERT's LayerNorm), built only when an update is there.
    func apply(_ layer: Int, _ site: Sublayer, h: FloatBuffer, residual r: FloatBuffer, rows: Int, norm: @autoclosure () -> FrozenNorm?,
               keep: Bool) -> AnyObject? {
        guard let u = self[layer, site] else { return nil }
        let (term, saved) = u.forward(h: h, residual: r, rows: rows, norm: norm(), keep: keep)
        addInPlace(h, term)
        return saved
    }

    /// dL/d(h + r + term) split into dL/dh and dL/dr, the update's parts added (both `dSum` without one).
    func backward(_ layer: Int, _ site: Sublayer, _ dSum: FloatBuffer, saved: AnyObject?, rows: Int,
                  norm: @autoclosure () -> FrozenNorm?) -> (dh: FloatBuffer, dr: FloatBuffer) {
        guard let u = self[layer, site], saved != nil else { return (dSum, dSum) }
        let (dh, dr) = u.backward(dSum, saved: saved, rows: rows, norm: norm())
        func plus(_ extra: FloatBuffer?) -> FloatBuffer {
            guard let extra else { return dSum }
            let out = FloatBuffer(dSum.array)
            addInPlace(out, extra)
            return out
        }
        return (plus(dh), plus(dr))
    }
}

extension LayerNorm {
    /// This norm, frozen, as a sublayer update sees it.
    var frozen: FrozenNorm {
        final class Box { let saved: LayerNorm.Saved; init(_ s: LayerNorm.Saved) { saved = s } }
        return FrozenNorm(forward: { x, rows in let (y, s) = self.forwardTraining(x, rows: rows); return (y, Box(s)) },
                          backward: { dy, saved, rows in self.backward(dy, saved: (saved as! Box).saved, rows: rows) })
    }
}
