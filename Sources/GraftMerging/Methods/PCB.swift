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
        let ratio = g.number("pcb_ratio")
        let lambda = Float(g.number("lambda"))
        // A (task vectors) and, reusing the same rows later, the balanced scale β.
        let a = FloatBuffer(count: t * d)
        let av = a.mutable
        for i in 0..<t {
            let x = g.inputs[i].values.values
            parallelFor(count: d) { r in for j in r { av[i * d + j] = x[j] - base[j] } }
        }
        let column = FloatBuffer(repeating: 0, count: d)  // Σⱼ Aⱼ
        let colSum = column.mutable
        for i in 0..<t { parallelFor(count: d) { r in for j in r { colSum[j] += av[i * d + j] } } }
        let clamped = FloatBuffer(count: t * d)
        let cv = clamped.mutable
        let score = FloatBuffer(count: t * d)
        let sv = score.mutable
        for i in 0..<t {
            let row = UnsafeBufferPointer(rebasing: av[(i * d)..<((i + 1) * d)])
            let lo = Selection.quantile(count: d, position: Int(Double(d) * 0.0001)) { abs(row[$0]) }
            let hi = Selection.quantile(count: d, position: Int(Double(d) * (1 - 0.0001) - 1)) { abs(row[$0]) }
            // Row min/max of the clamped magnitudes are lo and hi themselves.
            let range = hi - lo
            let tf = Float(t)
            parallelFor(count: d) { r in
                for j in r {
                    let v = row[j]
                    let m = min(max(abs(v), lo), hi)
                    cv[i * d + j] = v > 0 ? m : (v < 0 ? -m : 0)
                    let nm = range > 0 ? (m - lo) / range : 0
                    let intra = Float(exp(Double(tf * nm * nm)))
                    let inter = Float(tanh(Double(v * colSum[j])))
                    sv[i * d + j] = intra * inter
                }
            }
            // β: clamp below at the (1 − ratio) quantile, then min-max normalise the row.
            let srow = UnsafeBufferPointer(rebasing: sv[(i * d)..<((i + 1) * d)])
            let floorV = Selection.quantile(count: d, position: Int(Double(d) * (1 - ratio))) { srow[$0] }
            var maxV = floorV
            for j in 0..<d where srow[j] > maxV { maxV = srow[j] }
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
                for i in 0..<t { num += cv[i * d + j] * sv[i * d + j]; den += sv[i * d + j] }
                out[j] = base[j] + lambda * (num / max(den, 1e-12))
            }
        }
        return result
    }
}
