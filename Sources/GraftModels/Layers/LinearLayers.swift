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

    /// An adapter's updates by the module path of the layer each fits, checked as `attach` checks them but
    /// left unattached: what one sequence of a batched pass adds (`AdapterMix`).
    public func fitted(_ updates: [(module: String, update: any LayerUpdate)], source: String) throws -> [String: any LayerUpdate] {
        let known = linearModuleNames
        var out: [String: any LayerUpdate] = [:]
        for (name, u) in updates {
            let path = try matchModule(name, in: known, source: source)
            guard out[path] == nil else { throw ModelError("\(source): module '\(path)' is updated twice") }
            guard let layer = linear(path) else { continue }
            try layer.fit(u, module: path, source: source)
            out[path] = u
        }
        return out
    }

    /// Applies `edit` to every linear layer.
    public mutating func updateEveryLinear(_ edit: (inout Linear) -> Void) {
        for m in linearModuleNames { _ = updateLinear(m, edit) }
    }
}

/// A model any adapter method can attach to: its linear layers (`LinearLayers`, for the per-layer
/// updates) and the virtual-token hook (`VirtualTokens`: prompts ahead of the token embeddings, or
/// prefixes ahead of every layer's keys and values), which each model applies in all its passes.
public protocol AdaptableModel: LinearLayers {
    /// The widths virtual tokens must have for this model.
    var virtualTokenLayout: VirtualTokens.Layout { get }
    /// The virtual tokens in use, if any.
    var virtualTokens: VirtualTokens? { get set }
    /// Word-embedding rows [ids × hidden] (a prompt initialised from text).
    func wordEmbeddings(_ ids: [Int]) throws -> FloatBuffer
    /// The updates at the sublayer sites (bottleneck adapters: after attention and after the feed-forward
    /// block of each layer), which each model applies in all its passes.
    var sublayerUpdates: SublayerUpdates { get set }
}

extension AdaptableModel {
    /// Puts `tokens` in front of every sequence; an error naming `source` when they do not fit.
    public mutating func attach(_ tokens: VirtualTokens, source: String) throws {
        guard virtualTokens == nil else { throw ModelError("\(source): the model already has virtual tokens attached") }
        if let why = tokens.mismatch(virtualTokenLayout) { throw ModelError("\(source): \(why)") }
        virtualTokens = tokens
    }

    /// Attaches an update at a sublayer site of layer `layer`; an error naming `source` for a layer the
    /// model lacks or a site already taken.
    public mutating func attach(_ update: any SublayerUpdate, layer: Int, site: Sublayer, source: String) throws {
        let layers = virtualTokenLayout.layers
        guard (0..<layers).contains(layer) else { throw ModelError("\(source): layer \(layer) is not one of this model's \(layers)") }
        guard sublayerUpdates[layer, site] == nil else { throw ModelError("\(source): layer \(layer)'s \(site.rawValue) site already has an adapter") }
        sublayerUpdates.set(update, layer: layer, site: site)
    }
}

/// The adapters one sequence of a batched pass adds, each with its weight: `graft serve`'s per-request
/// choice (one adapter at weight 1, or several composed unfused, as llama.cpp's per-request `lora` list
/// and LoRAX's merged adapters). Each part adds its linear-layer updates and its sublayer updates
/// (bottleneck adapters) on the sequence's rows only; at most one part brings virtual tokens (a prompt or
/// prefix adapter's), which the sequence starts with instead of the model's.
public struct AdapterMix: Sendable {
    public struct Part: Sendable {
        public let name: String
        /// Tells apart two loadings under one name (an adapter replaced while requests for the old one
        /// still run): parts with the same id hold the same updates.
        public let id: String
        /// Updates by model module path (`LinearLayers.fitted`).
        public let updates: [String: any LayerUpdate]
        /// Updates at sublayer sites, each term added times `scale`.
        public let sublayers: SublayerUpdates
        /// A prompt's or prefix's rows (used at weight 1 whatever `scale` is: they are not a sum).
        public let virtualTokens: VirtualTokens?
        public let scale: Float
        public init(name: String, id: String? = nil, updates: [String: any LayerUpdate], sublayers: SublayerUpdates = SublayerUpdates(),
                    virtualTokens: VirtualTokens? = nil, scale: Float) {
            self.name = name; self.id = id ?? name; self.updates = updates; self.sublayers = sublayers
            self.virtualTokens = virtualTokens; self.scale = scale
        }
    }
    public let parts: [Part]
    /// Equal for the same adapters (the same loadings) at the same weights: sequences a batch can put in
    /// one row group.
    public let key: String
    public init(_ parts: [Part]) { self.parts = parts; key = parts.map { "\($0.id)*\($0.scale)" }.joined(separator: "+") }
    public static let none = AdapterMix([])

    /// The updates this mix adds to the layer at `module`.
    public func updates(_ module: String) -> [(update: any LayerUpdate, scale: Float)] {
        parts.compactMap { p in p.updates[module].map { ($0, p.scale) } }
    }

    /// The virtual tokens the sequence starts with; an error when two parts bring some.
    public func virtualTokens() throws -> VirtualTokens? {
        let brought = parts.filter { $0.virtualTokens != nil }
        guard brought.count <= 1 else {
            throw ModelError("adapters \(brought.map(\.name).joined(separator: " and ")) both bring virtual tokens: a sequence can start with one prompt or prefix only")
        }
        return brought.first?.virtualTokens
    }

    /// Whether any part updates a sublayer site.
    public var hasSublayers: Bool { parts.contains { !$0.sublayers.isEmpty } }
}
