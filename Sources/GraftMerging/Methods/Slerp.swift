import Foundation
import GraftTensor

/// Spherical linear interpolation between the base model and one other, per tensor:
/// θ = sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b with cos Ω = ⟨a/‖a‖, b/‖b‖⟩, falling back to linear
/// interpolation when |cos Ω| > 0.9995. `t` is usually a gradient over layers.
/// Source: Shoemake 1985; semantics of mergekit `slerp` (mergekit/merge_methods/slerp.py).
public struct SlerpMerge: MergeMethod {
    public let name = "slerp"
    public let summary = "spherical interpolation between base_model and one other model"
    public var basePolicy: BasePolicy { .required }
    public var minimumInputs: Int { 1 }
    public var maximumInputs: Int? { 1 }
    public var parameters: [ParameterSpec] {
        [ParameterSpec("t", .global, default: nil, help: "interpolation position: 0 = base_model, 1 = the other model")]
    }

    public init() {}

    public func merge(_ g: TensorGroup) throws -> FloatBuffer {
        guard let baseBuf = g.base, let other = g.inputs.first else { throw MergeError.method("slerp needs base_model and one other model") }
        let a = baseBuf.values, b = other.values.values
        let t = g.number("t")
        var na = 0.0, nb = 0.0
        for j in 0..<g.count { na += Double(a[j]) * Double(a[j]); nb += Double(b[j]) * Double(b[j]) }
        na = na.squareRoot(); nb = nb.squareRoot()
        let eps = 1e-8
        if na <= eps { na = 1 }
        if nb <= eps { nb = 1 }
        var dot = 0.0
        for j in 0..<g.count { dot += (Double(a[j]) / na) * (Double(b[j]) / nb) }
        dot = min(1, max(-1, dot))
        let ca: Float, cb: Float
        if abs(dot) > 0.9995 {
            ca = Float(1 - t); cb = Float(t)
        } else {
            let theta = acos(dot), s = sin(theta)
            ca = Float(sin((1 - t) * theta) / s); cb = Float(sin(t * theta) / s)
        }
        let result = FloatBuffer(count: g.count)
        let out = result.mutable
        parallelFor(count: g.count) { r in for j in r { out[j] = ca * a[j] + cb * b[j] } }
        return result
    }
}
