import Foundation
import GraftTensor

public enum Activation {
    /// GELU, exact (erf) form — HF's "gelu" — vectorised with erf(z) = 1 − t·exp(−z²)·P(t),
    /// t = 1/(1 + p·|z|) (Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7).
    public static func gelu(_ x: FloatBuffer) { gelu(x, into: x) }

    /// out = GELU(x); `out` may be `x` (each element is read before it is written). The training pass
    /// writes a new buffer and keeps x for the backward.
    public static func gelu(_ x: FloatBuffer, into out: FloatBuffer) {
        let v = x.values, o = out.mutable
        parallelFor(count: v.count, minChunk: 1 << 14) { r in
            var i = r.lowerBound
            while i + 16 <= r.upperBound {
                let a = UnsafeRawPointer(v.baseAddress! + i).loadUnaligned(as: SIMD16<Float>.self)
                UnsafeMutableRawPointer(o.baseAddress! + i).storeBytes(of: 0.5 * a * (1 + erf16(a * 0.70710678118654752)), as: SIMD16<Float>.self)
                i += 16
            }
            while i < r.upperBound { let a = v[i]; o[i] = 0.5 * a * (1 + erf(a * 0.70710678118654752)); i += 1 }
        }
    }

    /// Backward of `gelu`: dy ← dy · (Φ(x) + x·φ(x)), in place, with x the input of the forward pass.
    public static func geluBackward(_ dy: FloatBuffer, input x: FloatBuffer) {
        let d = dy.mutable, xv = x.values
        parallelFor(count: d.count, minChunk: 1 << 14) { r in
            var i = r.lowerBound
            typealias V = SIMD16<Float>
            while i + 16 <= r.upperBound {
                let a = UnsafeRawPointer(xv.baseAddress! + i).loadUnaligned(as: V.self)
                let p = UnsafeMutableRawPointer(d.baseAddress! + i)
                let cdf = 0.5 * (1 + erf16(a * 0.70710678118654752))
                let pdf = exp16(-0.5 * a * a) * 0.3989422804014327
                p.storeBytes(of: p.loadUnaligned(as: V.self) * (cdf + a * pdf), as: V.self)
                i += 16
            }
            while i < r.upperBound {
                let a = xv[i]
                d[i] *= 0.5 * (1 + erf(a * 0.70710678118654752)) + a * exp(-0.5 * a * a) * 0.3989422804014327
                i += 1
            }
        }
    }

    /// SwiGLU: out = silu(gate) ⊙ up (a new buffer).
    public static func swiglu(gate: FloatBuffer, up: FloatBuffer) -> FloatBuffer {
        let out = FloatBuffer(count: gate.count)
        let o = out.mutable, g = gate.values, u = up.values
        parallelFor(count: o.count, minChunk: 1 << 14) { r in
            typealias V = SIMD16<Float>
            var i = r.lowerBound
            while i + 16 <= r.upperBound {
                let a = UnsafeRawPointer(g.baseAddress! + i).loadUnaligned(as: V.self)
                let b = UnsafeRawPointer(u.baseAddress! + i).loadUnaligned(as: V.self)
                UnsafeMutableRawPointer(o.baseAddress! + i).storeBytes(of: a / (1 + exp16(-a)) * b, as: V.self)
                i += 16
            }
            while i < r.upperBound { let a = g[i]; o[i] = a / (1 + exp(-a)) * u[i]; i += 1 }
        }
        return out
    }

    /// Backward of `swiglu`: (d gate, d up) from d out; silu'(a) = σ(a)·(1 + a·(1 − σ(a))).
    public static func swigluBackward(_ dOut: FloatBuffer, gate: FloatBuffer, up: FloatBuffer) -> (dGate: FloatBuffer, dUp: FloatBuffer) {
        let dg = FloatBuffer(count: gate.count), du = FloatBuffer(count: gate.count)
        let dgv = dg.mutable, duv = du.mutable, d = dOut.values, g = gate.values, u = up.values
        parallelFor(count: d.count, minChunk: 1 << 14) { r in
            typealias V = SIMD16<Float>
            var i = r.lowerBound
            while i + 16 <= r.upperBound {
                let a = UnsafeRawPointer(g.baseAddress! + i).loadUnaligned(as: V.self)
                let b = UnsafeRawPointer(u.baseAddress! + i).loadUnaligned(as: V.self)
                let dd = UnsafeRawPointer(d.baseAddress! + i).loadUnaligned(as: V.self)
                let sig = 1 / (1 + exp16(-a))
                UnsafeMutableRawPointer(duv.baseAddress! + i).storeBytes(of: dd * a * sig, as: V.self)
                UnsafeMutableRawPointer(dgv.baseAddress! + i).storeBytes(of: dd * b * sig * (1 + a * (1 - sig)), as: V.self)
                i += 16
            }
            while i < r.upperBound {
                let a = g[i], sig = 1 / (1 + exp(-a))
                duv[i] = d[i] * a * sig
                dgv[i] = d[i] * u[i] * sig * (1 + a * (1 - sig))
                i += 1
            }
        }
        return (dg, du)
    }

    @inline(__always)
    static func erf16(_ z: SIMD16<Float>) -> SIMD16<Float> {
        let sign = SIMD16<Float>(repeating: 1).replacing(with: -1, where: z .< 0)
        let az = z * sign
        let t: SIMD16<Float> = 1 / (1 + 0.3275911 * az)
        typealias V = SIMD16<Float>
        var poly: V = t * 1.061405429
        poly += V(repeating: -1.453152027); poly *= t
        poly += V(repeating: 1.421413741); poly *= t
        poly += V(repeating: -0.284496736); poly *= t
        poly += V(repeating: 0.254829592); poly *= t
        let e: V = exp16(-(az * az))
        return sign * (1 - poly * e)
    }

    /// e^x: 2^(x·log2 e) split into integer and fraction, with a degree-6 polynomial for the fraction
    /// (relative error ≈ 2e-7); x is clamped to [−87, 88] (e^−87 ≈ 1.6e−38, e^88 ≈ 1.7e38: no overflow).
    @inline(__always)
    static func exp16(_ x: SIMD16<Float>) -> SIMD16<Float> {
        var cx = x.replacing(with: -87, where: x .< -87)
        cx.replace(with: 88, where: cx .> 88)
        let y = cx * 1.4426950408889634
        // floor(y) via the 1.5·2²³ rounding trick, corrected down when rounding went up.
        let magic = SIMD16<Float>(repeating: 12582912)
        var n = (y + magic) - magic
        n = n.replacing(with: n - 1, where: n .> y)
        let f = (y - n) * 0.6931471805599453
        typealias V = SIMD16<Float>
        var p: V = f * 0.0013888888889
        p += V(repeating: 0.0083333333333); p *= f
        p += V(repeating: 0.041666666666); p *= f
        p += V(repeating: 0.16666666666); p *= f
        p += V(repeating: 0.5); p *= f
        p += V(repeating: 1); p *= f
        p += V(repeating: 1)
        let bits = (unsafeBitCast(n + magic, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self) &+ 127) &<< 23
        return p * unsafeBitCast(bits, to: SIMD16<Float>.self)
    }

    /// Softmax over each row of length `width`, in place; entries equal to -inf get probability 0.
    public static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        typealias V = SIMD16<Float>
        for r in 0..<rows {
            let row = p + r * width
            var m = -Float.infinity
            for j in 0..<width where row[j] > m { m = row[j] }
            if m == -.infinity { for j in 0..<width { row[j] = 0 }; continue }
            var sum: Float = 0
            var j = 0
            var acc = V(repeating: 0)
            while j + 16 <= width {
                let raw = UnsafeMutableRawPointer(row + j)
                let x = raw.loadUnaligned(as: V.self)
                let e = exp16(x - m).replacing(with: 0, where: x .== -.infinity)
                raw.storeBytes(of: e, as: V.self)
                acc += e
                j += 16
            }
            sum = acc.sum()
            while j < width { let e = exp(row[j] - m); row[j] = e; sum += e; j += 1 }
            let inv = 1 / sum
            for j in 0..<width { row[j] *= inv }
        }
    }
}
