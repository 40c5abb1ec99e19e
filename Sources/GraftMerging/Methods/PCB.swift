import Foundation
import GraftTensor

/// PCB-merging (Parameter Competition Balancing), per tensor. With T task vectors τᵢ (rows of A, d entries):
///
///     |A|ᶜ  = clamp(|A|) to each row's [0.01 %, 99.99 %] quantiles;  Aᶜ = sgn(A)·|A|ᶜ
///     intra = exp(T · minmax_row(|A|ᶜ)²)            (self-competition within a task)
///     inter = tanh(A ⊙ Σⱼ Aⱼ)                        (agreement with the other tasks)
///     β     = minmax_row(clamp_below(intra ⊙ inter, row quantile 1 − pcb_ratio))
///     τ     = Σᵢ βᵢ ⊙ Aᶜᵢ / max(Σᵢ βᵢ, 1e-12);   θ = θ₀ + λ·τ
///
/// Entries below a task's (1 − pcb_ratio) importance quantile get β = 0: the lowest-importance entries
/// are dropped and the rest are weighted by balanced importance. A row whose values are all equal
/// normalises to 0 (the reference code would divide by zero there).
///
/// Source: Du et al. 2024, "Parameter Competition Balancing for Model Merging" (NeurIPS 2024); matches
/// `PCB_merge` in the authors' code (github.com/duguodong7/pcb-merging, `pcb-merging.py`), applied
/// to each tensor rather than to the whole flattened model so that merging streams one tensor at a time.
public struct PCBMerge: MergeMethod {
    public let name = "pcb"
    public let summary = "Parameter Competition Balancing: intra × inter importance, drop, rebalance (Du et al. 2024)"
    public var basePolicy: BasePolicy { .required }
    public var minimumInputs: Int { 1 }
    public var parameters: [ParameterSpec] {
        [ParameterSpec("pcb_ratio", .global, default: .number(0.1), range: .unitOpenClosed,
                       help: "fraction of each task vector's entries kept (by balanced importance)"),
         ParameterSpec("lambda", .global, default: .number(1), help: "scale of the merged task vector")]
    }

    public init() {}

    public func merge(_ g: TensorGroup) throws -> FloatBuffer {
        guard let baseBuf = g.base else { throw MergeError.method("pcb needs base_model") }
        let d = g.count, t = g.inputs.count
        let base = baseBuf.values
        let xs = g.inputs.map { $0.values.values }
        let ratio = g.number("pcb_ratio")
        let lambda = Float(g.number("lambda"))
        // Task vectors A[i] = x[i] − base are recomputed where needed rather than stored: only the
        // balanced scale β (t × d) and Σⱼ Aⱼ (d) are held, besides the memory-mapped inputs.
        let column = FloatBuffer(repeating: 0, count: d)
        let colSum = column.mutable
        parallelFor(count: d) { r in for j in r { for i in 0..<t { colSum[j] += xs[i][j] - base[j] } } }
        let score = FloatBuffer(count: t * d)
        let sv = score.mutable
        var bounds = [(lo: Float, hi: Float)](repeating: (0, 0), count: t)
        let tf = Float(t)
        for i in 0..<t {
            let x = xs[i]
            // |A[i]| goes into the row first, for its quantiles; the importance score replaces it below.
            let rowBuf = UnsafeMutableBufferPointer(rebasing: sv[(i * d)..<((i + 1) * d)])
            parallelFor(count: d) { r in for j in r { rowBuf[j] = abs(x[j] - base[j]) } }
            let mags = UnsafeBufferPointer(rowBuf)
            let lo = Selection.quantile(mags, position: Int(Double(d) * 0.0001))
            let hi = Selection.quantile(mags, position: Int(Double(d) * (1 - 0.0001) - 1))
            bounds[i] = (lo, hi)
            // Row min/max of the clamped magnitudes are lo and hi themselves.
            let range = hi - lo
            parallelFor(count: d) { r in
                for j in r {
                    let v = x[j] - base[j]
                    let m = min(max(abs(v), lo), hi)
                    let nm = range > 0 ? (m - lo) / range : 0
                    sv[i * d + j] = Foundation.exp(tf * nm * nm) * Foundation.tanh(v * colSum[j])
                }
            }
            // β: clamp below at the (1 − ratio) quantile, then min-max normalise the row.
            let row = UnsafeBufferPointer(rebasing: sv[(i * d)..<((i + 1) * d)])
            let floorV = Selection.quantile(row, position: Int(Double(d) * (1 - ratio)))
            var maxV = floorV
            for j in 0..<d where row[j] > maxV { maxV = row[j] }
            let span = maxV - floorV
            parallelFor(count: d) { r in
                for j in r { sv[i * d + j] = span > 0 ? (max(sv[i * d + j], floorV) - floorV) / span : 0 }
            }
        }
        let result = FloatBuffer(count: d)
        let out = result.mutable
        parallelFor(count: d) { r in
            for j in r {
                var num: Float = 0, den: Float = 0
                for i in 0..<t {
                    let v = xs[i][j] - base[j]
                    let m = min(max(abs(v), bounds[i].lo), bounds[i].hi)
                    let clamped: Float = v > 0 ? m : (v < 0 ? -m : 0)
                    num += clamped * sv[i * d + j]
                    den += sv[i * d + j]
                }
                out[j] = base[j] + lambda * (num / max(den, 1e-12))
            }
        }
        return result
    }
}
