import GraftTensor

/// RMS normalisation: x · rsqrt(mean(x²) + eps) · w (Llama).
public struct RMSNorm: Sendable {
    public let weight: FloatBuffer
    public let eps: Float

    public init(weight: FloatBuffer, eps: Float) { self.weight = weight; self.eps = eps }

    /// out = norm(x) for `rows` rows (out may be x); each row's 1/rms into `rstd` when given.
    public func forward(_ x: FloatBuffer, rows: Int, into out: FloatBuffer, rstd: UnsafeMutablePointer<Float>? = nil) {
        let d = weight.count
        let xv = x.values, ov = out.mutable, w = weight.values
        let st = UncheckedSendable(rstd)
        parallelFor(count: rows, minChunk: 16) { rr in
            for r in rr {
                var ss: Float = 0
                for j in 0..<d { let v = xv[r * d + j]; ss += v * v }
                let inv = 1 / (ss / Float(d) + eps).squareRoot()
                st.value?[r] = inv
                for j in 0..<d { ov[r * d + j] = xv[r * d + j] * inv * w[j] }
            }
        }
    }
}

extension RMSNorm {
    /// out = RMSNorm(x) (a new buffer) and the per-row 1/rms `backward` needs.
    public func forwardTraining(_ x: FloatBuffer, rows: Int) -> (y: FloatBuffer, rstd: [Float]) {
        let y = FloatBuffer(count: rows * weight.count)
        var rstd = [Float](repeating: 0, count: rows)
        rstd.withUnsafeMutableBufferPointer { forward(x, rows: rows, into: y, rstd: $0.baseAddress) }
        return (y, rstd)
    }

    /// dL/dx (weight frozen): with g = dy ⊙ w and r = 1/rms, dx = r·g − x · r³ · mean(g ⊙ x).
    public func backward(_ dy: FloatBuffer, input x: FloatBuffer, rstd: [Float], rows: Int) -> FloatBuffer {
        let d = weight.count
        let dx = FloatBuffer(count: rows * d)
        let dyv = dy.values, xv = x.values, dxv = dx.mutable, w = weight.values
        parallelFor(count: rows, minChunk: 16) { rr in
            for r in rr {
                let inv = rstd[r]
                var dot: Float = 0
                for j in 0..<d { dot += dyv[r * d + j] * w[j] * xv[r * d + j] }
                let c = dot / Float(d) * inv * inv * inv
                for j in 0..<d { dxv[r * d + j] = dyv[r * d + j] * w[j] * inv - xv[r * d + j] * c }
            }
        }
        return dx
    }
}

/// Rotary position embedding as transformers applies it (`rotate_half`: dimension j pairs with j + d/2).
public struct RoPE: Sendable {
    public let headDim: Int
    let invFreq: [Double]

    public init(headDim: Int, theta: Double, scale: Double = 1) {
        self.headDim = headDim
        invFreq = (0..<(headDim / 2)).map { j in
            Double(Float(1) / Float(pow(Float(theta), Float(2 * j) / Float(headDim)))) / scale
        }
    }

    /// Rotates `heads` heads of one token at `position`, in place (row = heads × headDim).
    /// `inverse` rotates back (the backward pass: the transpose of a rotation is its inverse).
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int, inverse: Bool = false) {
        let half = headDim / 2
        for j in 0..<half {
            let angle = Float(Double(position) * invFreq[j])
            let c = cosf(angle), s = inverse ? -sinf(angle) : sinf(angle)
            for h in 0..<heads {
                let p = x + h * headDim
                let a = p[j], b = p[j + half]
                p[j] = a * c - b * s
                p[j + half] = b * c + a * s
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
