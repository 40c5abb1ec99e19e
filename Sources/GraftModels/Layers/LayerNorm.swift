import GraftTensor

/// Layer normalisation over the last dimension: (x − mean) / sqrt(var + eps) · γ + β.
public struct LayerNorm: Sendable {
    public let gamma: FloatBuffer
    public let beta: FloatBuffer
    public let eps: Float

    public init(gamma: FloatBuffer, beta: FloatBuffer, eps: Float) { self.gamma = gamma; self.beta = beta; self.eps = eps }

    /// In place over `rows` rows of width γ.count.
    public func forward(_ x: FloatBuffer, rows: Int) { normalize(x, rows: rows, into: x, mean: nil, rstd: nil) }

    /// y = LayerNorm(x) row by row (y may be x), storing each row's mean and 1/σ when asked. Statistics
    /// in float, two passes with 16-lane partial sums.
    func normalize(_ x: FloatBuffer, rows: Int, into y: FloatBuffer, mean: UnsafeMutablePointer<Float>?, rstd: UnsafeMutablePointer<Float>?) {
        let d = gamma.count
        let xv = x.values, yv = y.mutable, g = gamma.values, b = beta.values
        let st = UncheckedSendable((mean, rstd))
        parallelFor(count: rows, minChunk: 16) { rr in
            typealias V = SIMD16<Float>
            for r in rr {
                let row = xv.baseAddress! + r * d, out = yv.baseAddress! + r * d
                var acc = V(repeating: 0), j = 0
                while j + 16 <= d { acc += UnsafeRawPointer(row + j).loadUnaligned(as: V.self); j += 16 }
                var sum = acc.sum()
                while j < d { sum += row[j]; j += 1 }
                let m = sum / Float(d)
                acc = V(repeating: 0); j = 0
                while j + 16 <= d { let c = UnsafeRawPointer(row + j).loadUnaligned(as: V.self) - m; acc += c * c; j += 16 }
                var v = acc.sum()
                while j < d { let c = row[j] - m; v += c * c; j += 1 }
                let inv = 1 / (v / Float(d) + eps).squareRoot()
                st.value.0?[r] = m; st.value.1?[r] = inv
                j = 0
                while j + 16 <= d {
                    let c = UnsafeRawPointer(row + j).loadUnaligned(as: V.self) - m
                    let gj = UnsafeRawPointer(g.baseAddress! + j).loadUnaligned(as: V.self)
                    let bj = UnsafeRawPointer(b.baseAddress! + j).loadUnaligned(as: V.self)
                    UnsafeMutableRawPointer(out + j).storeBytes(of: c * inv * gj + bj, as: V.self)
                    j += 16
                }
                while j < d { out[j] = (row[j] - m) * inv * g[j] + b[j]; j += 1 }
            }
        }
    }
}


extension LayerNorm {
    /// Per-row statistics `backward` needs.
    public struct Saved: @unchecked Sendable { let input: FloatBuffer, mean: [Float], rstd: [Float] }

    /// out = LayerNorm(x) (a new buffer), keeping x, the means and 1/σ.
    public func forwardTraining(_ x: FloatBuffer, rows: Int) -> (y: FloatBuffer, saved: Saved) {
        let y = FloatBuffer(count: rows * gamma.count)
        var mean = [Float](repeating: 0, count: rows), rstd = [Float](repeating: 0, count: rows)
        mean.withUnsafeMutableBufferPointer { mp in rstd.withUnsafeMutableBufferPointer { rp in
            normalize(x, rows: rows, into: y, mean: mp.baseAddress, rstd: rp.baseAddress)
        } }
        return (y, Saved(input: x, mean: mean, rstd: rstd))
    }

    /// dL/dx from dL/dy (γ and β frozen): with x̂ = (x − μ)/σ and g = dy ⊙ γ,
    /// dx = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ.
    public func backward(_ dy: FloatBuffer, saved s: Saved, rows: Int) -> FloatBuffer {
        let d = gamma.count
        let dx = FloatBuffer(count: rows * d)
        let dyv = dy.values, xv = s.input.values, dxv = dx.mutable, g = gamma.values
        parallelFor(count: rows, minChunk: 16) { rr in
            for r in rr {
                let m = s.mean[r], inv = s.rstd[r]
                var sumG: Float = 0, sumGX: Float = 0
                for j in 0..<d {
                    let gj = dyv[r * d + j] * g[j], xh = (xv[r * d + j] - m) * inv
                    sumG += gj; sumGX += gj * xh
                }
                let mg = sumG / Float(d), mgx = sumGX / Float(d)
                for j in 0..<d {
                    let gj = dyv[r * d + j] * g[j], xh = (xv[r * d + j] - m) * inv
                    dxv[r * d + j] = (gj - mg - xh * mgx) * inv
                }
            }
        }
        return dx
    }
}
