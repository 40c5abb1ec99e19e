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

extension AdapterMix {
    /// What this mix's updates at (`layer`, `site`) add on `rows` of a batched pass (h and r [batch rows ×
    /// `width`]): each part's term times its weight, summed [rows.count × width]; nil when no part has an
    /// update there. Inference only (nothing kept for backward).
    func sublayerTerm(_ layer: Int, _ site: Sublayer, h: FloatBuffer, residual r: FloatBuffer, rows: Range<Int>, width: Int) -> FloatBuffer? {
        let here = parts.compactMap { p in p.sublayers[layer, site].map { (update: $0, scale: p.scale) } }
        guard !here.isEmpty, !rows.isEmpty else { return nil }
        let n = rows.count, start = rows.lowerBound * width
        let hs = FloatBuffer(count: n * width), rs = FloatBuffer(count: n * width)
        withExtendedLifetime((h, r)) {
            hs.mutable.baseAddress!.update(from: h.values.baseAddress! + start, count: n * width)
            rs.mutable.baseAddress!.update(from: r.values.baseAddress! + start, count: n * width)
        }
        let sum = FloatBuffer(repeating: 0, count: n * width)
        let sv = sum.mutable
        for (u, scale) in here {
            let term = u.forward(h: hs, residual: rs, rows: n, norm: nil, keep: false).term
            let tv = term.values
            for i in 0..<sv.count { sv[i] += scale * tv[i] }
        }
        return sum
    }
}
