import GraftTensor

/// RMS normalisation: x · rsqrt(mean(x²) + eps) · w (Llama).
public struct RMSNorm: Sendable {
    public let weight: FloatBuffer
    public let eps: Float

    public init(weight: FloatBuffer, eps: Float) { self.weight = weight; self.eps = eps }

    /// out = norm(x) for `rows` rows (out may be x).
    public func forward(_ x: FloatBuffer, rows: Int, into out: FloatBuffer) {
        let d = weight.count
        let xv = x.values, ov = out.mutable, w = weight.values
        for r in 0..<rows {
            var ss: Float = 0
            for j in 0..<d { let v = xv[r * d + j]; ss += v * v }
            let inv = 1 / (ss / Float(d) + eps).squareRoot()
            for j in 0..<d { ov[r * d + j] = xv[r * d + j] * inv * w[j] }
        }
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
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        let half = headDim / 2
        for j in 0..<half {
            let angle = Float(Double(position) * invFreq[j])
            let c = cosf(angle), s = sinf(angle)
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
