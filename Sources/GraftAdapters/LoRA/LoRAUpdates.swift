import GraftFormats
import GraftTensor

extension LoRAAdapter {
    /// `dora` where the modules carry magnitudes, `allora` for a folder Graft's ALLoRA saved (`graft_method`), else `lora`.
    public var method: String {
        if config.useDoRA || modules.values.contains(where: { $0.magnitude != nil }) { return "dora" }
        return config.json["graft_method"]?.stringValue == "allora" ? "allora" : "lora"
    }
    public var moduleNames: [String] { modules.keys.sorted() }

    /// Every module as an unfused update (LoRA, or DoRA where it has a magnitude), with its own copies
    /// of the tensors, for a model to attach.
    public func layerUpdates(dropout: Float = 0) -> [(module: String, update: any LayerUpdate)] {
        modules.sorted { $0.key < $1.key }.map { name, m in
            let a = FloatBuffer(FloatBuffer(m.a).array), b = FloatBuffer(FloatBuffer(m.b).array)
            let rank = m.a.shape[0], scale = Float(m.scaling)
            if let mag = m.magnitude {
                return (name, DoRAUpdate(a: a, b: b, magnitude: FloatBuffer(FloatBuffer(mag).array), rank: rank, scale: scale, dropout: dropout))
            }
            let lora = LoRAUpdate(a: a, b: b, rank: rank, scale: scale, dropout: dropout)
            if method == "allora", let c = try? ALLoRAConfig.continuing(config) { return (name, ALLoRAUpdate(lora: lora, eta: Float(c.eta))) }
            return (name, lora)
        }
    }

    /// Each module's weight tensor → W + ΔW (DoRA: m ⊙ (W + ΔW)/‖W + ΔW‖), shapes checked.
    public func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold] {
        try targets(in: checkpoint).mapValues { m in { [self] w in updated(w, m) } }
    }

    /// Continuing this adapter: its own rank, alpha, scaling rule and targets (only the dropout is the
    /// new run's), so the saved config describes the saved tensors.
    public func recipe(dropout: Double) throws -> any AdapterRecipe {
        let c = config
        if method == "allora" { return try ALLoRAConfig.continuing(c) }
        guard c.rankPattern.isEmpty && c.alphaPattern.isEmpty else {
            throw LoRAError("\(path): adapters with rank_pattern or alpha_pattern cannot be continued yet")
        }
        var own = LoRAConfig(rank: c.r, alpha: c.loraAlpha, targetModules: c.targetModules)
        own.dropout = dropout; own.useRSLoRA = c.useRSLoRA; own.useDoRA = method == "dora"
        return own
    }

    public var settingsSummary: String {
        if method == "allora" { return "ALLoRA r = \(config.r), eta = \((try? ALLoRAConfig.continuing(config).eta) ?? 2)" }
        return "\(method == "dora" ? "DoRA" : "LoRA") r = \(config.r), alpha = \(config.loraAlpha)\(config.useRSLoRA ? ", rsLoRA" : "")"
    }
}

public struct LoRAError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
