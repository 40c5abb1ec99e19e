import GraftTensor

/// Model Stock: interpolate between the base and the average of the fine-tunes with
/// t = N·cos θ / (1 + (N − 1)·cos θ), cos θ the mean pairwise cosine between task vectors (over the
/// whole tensor, or per output row with `filter_wise`). The base is kept where the denominator vanishes.
/// Source: Jang et al. 2024, "Model Stock" (arXiv 2403.19522); semantics of mergekit `model_stock`.
public struct ModelStockMerge: MergeMethod {
    public let name = "model_stock"
    public let summary = "interpolate base ↔ average by the task vectors' mean angle (Jang et al. 2024)"
    public var basePolicy: BasePolicy { .required }
    public var minimumInputs: Int { 2 }
    public var parameters: [ParameterSpec] {
        [ParameterSpec("filter_wise", .global, .bool, default: .bool(false), help: "one angle per output row instead of per tensor")]
    }

    public init() {}

    public func merge(_ g: TensorGroup) throws -> FloatBuffer {
        guard let baseBuf = g.base else { throw MergeError.method("model_stock needs base_model") }
        let w0 = baseBuf.values
        let ws = g.inputs.map { $0.values.values }
        let n = g.count
        let rows = g.flag("filter_wise") && g.shape.count >= 2 ? g.shape[0] : 1
        let cols = n / max(rows, 1)
        let count = Float(ws.count)
        let result = FloatBuffer(count: n)
        let out = result.mutable
        parallelFor(count: rows, minChunk: 1) { rr in
            for r in rr {
                let lo = r * cols, hi = lo + cols
                var cosSum = 0.0, pairs = 0.0
                for i in ws.indices {
                    for k in (i + 1)..<ws.count {
                        var dot = 0.0, ni = 0.0, nk = 0.0
                        for j in lo..<hi {
                            let a = Double(ws[i][j] - w0[j]), b = Double(ws[k][j] - w0[j])
                            dot += a * b; ni += a * a; nk += b * b
                        }
                        cosSum += min(1, max(-1, dot / max(ni.squareRoot() * nk.squareRoot(), 1e-6)))
                        pairs += 1
                    }
                }
                let cosTheta = Float(cosSum / pairs)
                let denom = 1 + (count - 1) * cosTheta
                let t: Float = abs(denom) < 1e-6 ? 0 : count * cosTheta / denom
                for j in lo..<hi {
                    var avg: Float = 0
                    for w in ws { avg += w[j] }
                    avg /= count
                    out[j] = t * avg + (1 - t) * w0[j]
                }
            }
        }
        return result
    }
}
