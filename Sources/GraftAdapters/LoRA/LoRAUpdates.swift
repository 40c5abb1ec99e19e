import GraftTensor

extension LoRAAdapter {
    /// Every LoRA module as an unfused low-rank update (module path as PEFT names it, without the
    /// `base_model.model.` prefix), for a model to attach to its linear layers at inference.
    public func lowRankUpdates() -> [(module: String, update: LowRankUpdate)] {
        modules.sorted { $0.key < $1.key }.map { name, m in
            (name, LowRankUpdate(a: FloatBuffer(m.a), b: FloatBuffer(m.b), rank: m.a.shape[0], scale: Float(m.scaling),
                                  magnitude: m.magnitude.map { FloatBuffer($0) }))
        }
    }

    /// The classification head saved in `modules_to_save` (`classifier` or `score`): weight [classes × hidden], bias.
    public func classificationHead() throws -> (weight: Tensor, bias: Tensor?)? {
        for stem in ["classifier", "score"] {
            guard let w = savedTensors.first(where: { $0.0 == stem + ".weight" || $0.0.hasSuffix("." + stem + ".weight") })?.1 else { continue }
            guard w.shape.count == 2 else { throw LoRAError("\(path): \(stem).weight is not a matrix") }
            let bias = savedTensors.first { $0.0 == stem + ".bias" || $0.0.hasSuffix("." + stem + ".bias") }?.1
            return (w, bias)
        }
        return nil
    }
}

public struct LoRAError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
