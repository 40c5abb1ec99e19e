import GraftTensor

/// A model whose linear layers are reachable by module path, as PEFT names them
/// (`encoder.layer.3.attention.self.query`, `model.layers.3.self_attn.q_proj`). Adapters attach through
/// it, training marks what to train, and bf16 packing walks every layer.
public protocol LinearLayers {
    /// Every linear layer's module path.
    var linearModuleNames: [String] { get }
    /// Edits the linear layer at a module path; false if the model has none there.
    mutating func updateLinear(_ module: String, _ edit: (inout Linear) throws -> Void) rethrows -> Bool
}

extension LinearLayers {
    /// The linear layer at a module path, if any.
    public func linear(_ module: String) -> Linear? {
        var copy = self
        var found: Linear?
        _ = copy.updateLinear(module) { found = $0 }
        return found
    }

    /// Attaches an adapter's updates (any method's `LayerUpdate`s) to the linear layers they name. Module
    /// paths may carry a task-model prefix (`bert.`, `base_model.model.`); an update for a module this
    /// model lacks, or of the wrong shape, is an error naming it.
    public mutating func attach(_ updates: [(module: String, update: any LayerUpdate)], source: String) throws {
        let known = linearModuleNames
        for (name, u) in updates {
            let path = try matchModule(name, in: known, source: source)
            _ = try updateLinear(path) { try $0.attach(u, module: path, source: source) }
        }
    }

    /// Applies `edit` to every linear layer.
    public mutating func updateEveryLinear(_ edit: (inout Linear) -> Void) {
        for m in linearModuleNames { _ = updateLinear(m, edit) }
    }
}
