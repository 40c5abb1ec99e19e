import GraftTensor

/// Generalised task arithmetic, the engine shared by task_arithmetic, TIES, DARE and Breadcrumbs,
/// following mergekit's `GeneralizedTaskArithmeticMerge` (mergekit 0.1.5):
///
///     τᵢ = sparsify(θᵢ − θ₀) · wᵢ
///     consensus (TIES "sum"): sign s = sgn(Σᵢ τᵢ) (≥ 0 → +); keep τᵢ where sgn(τᵢ) = s
///     τ = Σ kept τᵢ,  divisor = Σ wᵢ over kept (or all when there is no consensus)
///     θ = θ₀ + λ · (normalize ? τ / divisor : τ)
///
/// Each configured instance is declared in its own file (`TIES.swift`, `DARE.swift`, …).
/// Source: Ilharco et al. 2023, "Editing Models with Task Arithmetic" (arXiv 2212.04089); mergekit
/// `mergekit/merge_methods/generalized_task_arithmetic.py`.
public struct TaskArithmeticMerge: MergeMethod {
    public enum Consensus: Sendable { case none, sum, count }

    public let name: String
    public let summary: String
    let sparsification: Sparsifier.Method?
    let consensus: Consensus
    let defaultNormalize: Bool
    let defaultRescale: Bool

    public var basePolicy: BasePolicy { .required }

    public var parameters: [ParameterSpec] {
        var p: [ParameterSpec] = [
            ParameterSpec("weight", .perModel, default: nil, help: "scale of this model's task vector"),
            ParameterSpec("density", .perModel, default: .number(1), range: .unitOpenClosed,
                          help: "fraction of task-vector entries kept"),
            ParameterSpec("normalize", .global, .bool, default: .bool(defaultNormalize),
                          help: "divide the summed task vectors by the sum of weights"),
            ParameterSpec("rescale", .global, .bool, default: .bool(defaultRescale),
                          help: "rescale kept entries to preserve each task vector's L1 norm"),
            ParameterSpec("lambda", .global, default: .number(1), help: "scale of the merged task vector"),
            ParameterSpec("int8_mask", .global, .bool, default: .bool(false), help: "accepted for mergekit compatibility; no effect"),
        ]
        if sparsification == .magnitudeOutliers {
            p.append(ParameterSpec("gamma", .perModel, default: .number(0.01), range: .unitClosedOpen,
                                   help: "fraction of largest-magnitude entries dropped as outliers"))
        }
        return p
    }

    public func merge(_ g: TensorGroup) throws -> FloatBuffer {
        guard let baseBuf = g.base else { throw MergeError.method("\(name) needs base_model") }
        let n = g.count
        let base = baseBuf.values
        let xs = g.inputs.map { $0.values.values }
        let weights = g.inputs.map { Float($0.number("weight")) }
        let rescale = g.flag("rescale")
        // One sparsifier per input (each needs passes over its task vector).
        var sparsifiers = [Sparsifier?](repeating: nil, count: xs.count)
        if let method = sparsification {
            sparsifiers.withUnsafeMutableBufferPointer { out in
                let out = UncheckedSendable(out)
                for i in xs.indices {
                    let x = xs[i]
                    out.value[i] = Sparsifier(method, n: n, density: g.inputs[i].number("density"),
                                              gamma: g.inputs[i].parameters["gamma"]?.number ?? 0, rescale: rescale,
                                              seed: g.seed, key: "\(g.inputs[i].model)|\(g.name)") { x[$0] - base[$0] }
                }
            }
        }
        let normalize = g.flag("normalize")
        let lambda = Float(g.number("lambda"))
        let consensus = self.consensus
        let result = FloatBuffer(count: n)
        let out = result.mutable
        let chunk = Sparsifier.chunk
        let nChunks = (n + chunk - 1) / chunk
        let m = xs.count
        parallelFor(count: nChunks, minChunk: 2) { chunks in
            var scratch = [Float](repeating: 0, count: m * chunk)
            scratch.withUnsafeMutableBufferPointer { s in
                for c in chunks {
                    let start = c * chunk, len = min(chunk, n - start)
                    for i in 0..<m {
                        let d = UnsafeMutableBufferPointer(rebasing: s[(i * chunk)..<(i * chunk + len)])
                        let x = xs[i]
                        for j in 0..<len { d[j] = x[start + j] - base[start + j] }
                        sparsifiers[i]?.apply(start: start, d)
                        let w = weights[i]
                        for j in 0..<len { d[j] *= w }
                    }
                    for j in 0..<len {
                        var mixed: Float = 0, divisor: Float = 0
                        switch consensus {
                        case .none:
                            for i in 0..<m { mixed += s[i * chunk + j]; divisor += weights[i] }
                            if abs(divisor) < 1e-8 { divisor = 1 }
                        case .sum, .count:
                            var vote: Float = 0
                            for i in 0..<m {
                                let v = s[i * chunk + j]
                                vote += consensus == .sum ? v : (v > 0 ? 1 : (v < 0 ? -1 : 0))
                            }
                            let positive = vote >= 0
                            for i in 0..<m {
                                let v = s[i * chunk + j]
                                if (positive && v > 0) || (!positive && v < 0) { mixed += v; divisor += weights[i] }
                            }
                            if divisor == 0 { divisor = 1 }
                        }
                        if normalize { mixed /= divisor }
                        if lambda != 1 { mixed *= lambda }
                        out[start + j] = base[start + j] + mixed
                    }
                }
            }
        }
        return result
    }
}

extension TaskArithmeticMerge {
    /// θ₀ + Σ wᵢ(θᵢ − θ₀). mergekit `task_arithmetic`.
    public static let taskArithmetic = TaskArithmeticMerge(
        name: "task_arithmetic", summary: "θ₀ + λ Σ wᵢ τᵢ (Ilharco et al. 2023)",
        sparsification: nil, consensus: .none, defaultNormalize: false, defaultRescale: false)
}
