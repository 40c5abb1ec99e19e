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
                    out.value[i] = Sparsifier(method, x: x, base: base, density: g.inputs[i].number("density"),
                                              gamma: g.inputs[i].parameters["gamma"]?.number ?? 0, rescale: rescale,
                                              seed: g.seed, key: "\(g.inputs[i].model)|\(g.name)")
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
        let noConsensus = consensus == .none
        let byCount = consensus == .count
        let divisorAll: Float = { let d = weights.reduce(Float(0), +); return abs(d) < 1e-8 ? 1 : d }()
        parallelFor(count: nChunks, minChunk: 2) { chunks in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: m * chunk)
            defer { scratch.deallocate() }
            for c in chunks {
                let start = c * chunk, len = min(chunk, n - start)
                // Weighted, sparsified task vectors of this chunk, one row per input.
                for i in 0..<m {
                    let d = UnsafeMutableBufferPointer(start: scratch + i * chunk, count: len)
                    Kernels.subtract(xs[i].baseAddress! + start, base.baseAddress! + start, into: d.baseAddress!, count: len)
                    sparsifiers[i]?.apply(start: start, d)
                    Kernels.scale(d.baseAddress!, by: weights[i], count: len)
                }
                let o = out.baseAddress! + start, b = base.baseAddress! + start
                var j = 0
                typealias V = SIMD16<Float>
                while j < len {
                    let w = min(16, len - j)
                    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V {
                        if w == 16 { return UnsafeRawPointer(p).loadUnaligned(as: V.self) }
                        var v = V(repeating: 0); for e in 0..<w { v[e] = p[e] }; return v
                    }
                    var mixed = V(repeating: 0), divisor = V(repeating: 0)
                    if noConsensus {
                        for i in 0..<m { mixed += load(scratch + i * chunk + j) }
                        divisor = V(repeating: divisorAll)
                    } else {
                        var vote = V(repeating: 0)
                        for i in 0..<m {
                            let v = load(scratch + i * chunk + j)
                            if byCount {
                                vote += V(repeating: 0).replacing(with: 1, where: v .> 0).replacing(with: -1, where: v .< 0)
                            } else {
                                vote += v
                            }
                        }
                        let positive = vote .>= 0
                        for i in 0..<m {
                            let v = load(scratch + i * chunk + j)
                            let agree = (positive .& (v .> 0)) .| (.!positive .& (v .< 0))
                            mixed += V(repeating: 0).replacing(with: v, where: agree)
                            divisor += V(repeating: 0).replacing(with: weights[i], where: agree)
                        }
                        divisor.replace(with: 1, where: divisor .== 0)
                    }
                    if normalize { mixed /= divisor }
                    if lambda != 1 { mixed *= lambda }
                    let r = load(b + j) + mixed
                    if w == 16 { UnsafeMutableRawPointer(o + j).storeBytes(of: r, as: V.self) } else { for e in 0..<w { o[j + e] = r[e] } }
                    j += 16
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
