import GraftTensor

/// Layer normalisation over the last dimension: (x − mean) / sqrt(var + eps) · γ + β.
public struct LayerNorm: Sendable {
    public let gamma: FloatBuffer
    public let beta: FloatBuffer
    public let eps: Float

    public init(gamma: FloatBuffer, beta: FloatBuffer, eps: Float) { self.gamma = gamma; self.beta = beta; self.eps = eps }

    /// In place over `rows` rows of width γ.count.
    public func forward(_ x: FloatBuffer, rows: Int) {
        let d = gamma.count
        let xv = x.mutable, g = gamma.values, b = beta.values
        parallelFor(count: rows, minChunk: 16) { rr in
            for r in rr {
                let row = xv.baseAddress! + r * d
                var mean = 0.0
                for j in 0..<d { mean += Double(row[j]) }
                mean /= Double(d)
                var varSum = 0.0
                for j in 0..<d { let c = Double(row[j]) - mean; varSum += c * c }
                let inv = Float(1 / (varSum / Double(d) + Double(eps)).squareRoot())
                let m = Float(mean)
                for j in 0..<d { row[j] = (row[j] - m) * inv * g[j] + b[j] }
            }
        }
    }
}


extension LayerNorm {
    /// Per-row statistics `backward` needs.
    public struct Saved: @unchecked Sendable { let input: FloatBuffer, mean: [Float], rstd: [Float] }

    /// out = LayerNorm(x) (a new buffer), keeping x, the means and 1/σ.
    public func forwardTraining(_ x: FloatBuffer, rows: Int) -> (y: FloatBuffer, saved: Saved) {
        let d = gamma.count
        let y = FloatBuffer(count: rows * d)
        var mean = [Float](repeating: 0, count: rows), rstd = [Float](repeating: 0, count: rows)
        let xv = x.values, yv = y.mutable, g = gamma.values, b = beta.values
        mean.withUnsafeMutableBufferPointer { mp in rstd.withUnsafeMutableBufferPointer { rp in
            let st = UncheckedSendable((mp, rp))
            parallelFor(count: rows, minChunk: 16) { rr in
                let (mp, rp) = st.value
                for r in rr {
                    let row = xv.baseAddress! + r * d, out = yv.baseAddress! + r * d
                    // Two passes in float with 16-lane partial sums (mean, then squared deviations).
                    typealias V = SIMD16<Float>
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
                    mp[r] = m; rp[r] = inv
                    for j in 0..<d { out[j] = (row[j] - m) * inv * g[j] + b[j] }
                }
            }
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
