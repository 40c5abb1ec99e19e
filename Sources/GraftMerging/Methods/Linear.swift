import GraftTensor

/// Linear merge (model soup): Σ wᵢθᵢ, divided by Σ wᵢ when `normalize` (default). Computed in float32
/// in model order, as mergekit's `linear` does. `base_model` is not used.
/// Source: Wortsman et al. 2022, "Model soups" (arXiv 2203.05482); mergekit `linear`.
public struct LinearMerge: MergeMethod {
    public let name = "linear"
    public let summary = "weighted average Σ wᵢθᵢ / Σ wᵢ (model soup)"
    public var basePolicy: BasePolicy { .unused }
    public var parameters: [ParameterSpec] {
        [ParameterSpec("weight", .perModel, default: nil, help: "this model's weight"),
         ParameterSpec("normalize", .global, .bool, default: .bool(true), help: "divide by the sum of weights")]
    }

    public init() {}

    public func merge(_ g: TensorGroup) throws -> FloatBuffer {
        let n = g.count
        let xs = g.inputs.map { $0.values.values }
        let ws = g.inputs.map { Float($0.number("weight")) }
        let normalize = g.flag("normalize")
        let denom = ws.reduce(Float(0), +)
        let result = FloatBuffer(count: n)
        let out = result.mutable
        parallelFor(count: n) { r in
            for j in r {
                var acc: Float = 0
                for i in xs.indices { acc += xs[i][j] * ws[i] }
                out[j] = normalize ? acc / denom : acc
            }
        }
        return result
    }
}
