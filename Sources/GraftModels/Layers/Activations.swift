import Foundation
import GraftTensor

public enum Activation {
    /// GELU, exact (erf) form — HF's "gelu".
    public static func gelu(_ x: FloatBuffer) {
        let v = x.mutable
        parallelFor(count: v.count, minChunk: 1 << 14) { r in
            for i in r { let a = v[i]; v[i] = 0.5 * a * (1 + erf(a * 0.70710678118654752)) }
        }
    }

    /// Softmax over each row of length `width`, in place; entries equal to -inf get probability 0.
    public static func softmaxRows(_ p: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        for r in 0..<rows {
            let row = p + r * width
            var m = -Float.infinity
            for j in 0..<width where row[j] > m { m = row[j] }
            var sum: Float = 0
            for j in 0..<width { let e = m == -.infinity ? 0 : exp(row[j] - m); row[j] = e; sum += e }
            let inv = sum > 0 ? 1 / sum : 0
            for j in 0..<width { row[j] *= inv }
        }
    }
}
