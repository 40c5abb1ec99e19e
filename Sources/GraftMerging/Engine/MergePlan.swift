import GraftFormats
import GraftTensor

/// A checked merge: every input opened, every tensor name matched across models with equal shapes,
/// and every parameter resolved for every tensor — so errors surface before anything is written.
public struct MergePlan: Sendable {
    public struct Item: Sendable {
        public let name: String
        public let shape: [Int]
        public let inputDType: DType
        public let outputDType: DType
        /// nil: copied through unchanged from `copySource` (non-float tensors).
        public let globals: [String: ParameterValue]?
        public let perModel: [[String: ParameterValue]]
        public var byteCount: Int { shape.reduce(1, *) * outputDType.byteSize }
    }

    public let config: MergeConfig
    public let method: any MergeMethod
    public let base: ModelSource?
    /// Non-base models in config order.
    public let inputs: [ModelSource]
    public let items: [Item]

    /// The model whose names, config.json and (by default) tokenizer the output takes.
    public var reference: ModelSource { base ?? inputs[0] }

    public var inputBytes: Int { ([base].compactMap { $0 } + inputs).reduce(0) { $0 + $1.checkpoint.dataBytes } }
    /// Every model folder and adapter folder the merge reads.
    public var inputPaths: [String] {
        ([base].compactMap { $0 } + inputs).flatMap { [$0.reference.path] + ($0.reference.adapter.map { [$0] } ?? []) }
    }
    public var outputBytes: Int { items.reduce(0) { $0 + $1.byteCount } }

    public init(config: MergeConfig) throws {
        self.config = config
        let method = try MergeMethods.named(config.mergeMethod)
        self.method = method
        // Base and inputs.
        var base: ModelSource? = nil
        if method.basePolicy == .required {
            guard let b = config.baseModel else { throw MergeError.config("merge_method \(method.name) needs `base_model:`") }
            base = try ModelSource(b)
        }
        var entries = config.models
        if let b = config.baseModel, method.basePolicy == .required { entries.removeAll { $0.model == b } }
        // The same model (with the same adapter) twice is a mistake, not a way to weight it.
        var seen: [String: Int] = [:]
        for (i, e) in entries.enumerated() {
            let key = OutputPlace.resolved(e.model.path) + "\u{0}" + (e.model.adapter.map(OutputPlace.resolved) ?? "")
            if let j = seen[key] {
                throw MergeError.config("models[\(j)] and models[\(i)] are the same model (\(e.model.name)); give it once (its weight sets its share)")
            }
            seen[key] = i
        }
        let inputs = try entries.map { try ModelSource($0.model) }
        guard inputs.count >= method.minimumInputs else {
            throw MergeError.config("\(method.name) needs at least \(method.minimumInputs) model(s) besides the base, got \(inputs.count)")
        }
        if let mx = method.maximumInputs, inputs.count > mx {
            throw MergeError.config("\(method.name) takes at most \(mx) model(s) besides the base, got \(inputs.count)")
        }
        self.base = base
        self.inputs = inputs
        let all = [base].compactMap { $0 } + inputs
        let ref = base ?? inputs[0]

        // Parameter names must be known to the method.
        let specs = method.parameters
        let valid = Set(specs.map(\.name))
        let validList = specs.map(\.name).sorted().joined(separator: ", ")
        for k in config.parameters.keys where !valid.contains(k) {
            throw MergeError.config("parameters.\(k): unknown parameter for \(method.name); valid: \(validList)")
        }
        for (i, e) in entries.enumerated() {
            for k in e.parameters.keys where !valid.contains(k) {
                throw MergeError.config("models[\(i)] (\(e.model.name)).parameters.\(k): unknown parameter for \(method.name); valid: \(validList)")
            }
        }

        // Names and shapes must agree.
        let refNames = ref.names
        let refSet = Set(refNames)
        for m in all where m !== ref {
            for n in refNames where m.info(n) == nil {
                throw MergeError.input("tensor '\(n)' is in \(ref.reference.name) but missing from \(m.reference.name)")
            }
            for n in m.names where !refSet.contains(n) {
                throw MergeError.input("tensor '\(n)' is in \(m.reference.name) but missing from \(ref.reference.name)")
            }
            for n in refNames {
                let a = ref.info(n)!, b = m.info(n)!
                guard a.shape == b.shape else {
                    throw MergeError.input("shape mismatch for '\(n)': \(ref.reference.name) has \(a.shape), \(m.reference.name) has \(b.shape)")
                }
                guard a.dtype.isFloatingPoint == b.dtype.isFloatingPoint else {
                    throw MergeError.input("dtype mismatch for '\(n)': \(ref.reference.name) has \(a.dtype.rawValue), \(m.reference.name) has \(b.dtype.rawValue)")
                }
            }
        }

        let layers = LayerPosition(names: refNames, config: try? ref.checkpoint.config())
        var items: [Item] = []
        for n in refNames {
            let info = ref.info(n)!
            guard info.dtype.isFloatingPoint else {
                items.append(Item(name: n, shape: info.shape, inputDType: info.dtype, outputDType: info.dtype, globals: nil, perModel: []))
                continue
            }
            let t = layers.t(for: n)
            var globals: [String: ParameterValue] = [:]
            var perModel = [[String: ParameterValue]](repeating: [:], count: inputs.count)
            for spec in specs {
                switch spec.scope {
                case .global:
                    globals[spec.name] = try Self.resolve(spec, [config.parameters], tensor: n, t: t, where: "parameters")
                case .perModel:
                    for (i, e) in entries.enumerated() {
                        perModel[i][spec.name] = try Self.resolve(spec, [e.parameters, config.parameters], tensor: n, t: t,
                                                                  where: "models[\(i)] (\(e.model.name))")
                    }
                }
            }
            let out = config.outDtype ?? config.dtype ?? info.dtype
            items.append(Item(name: n, shape: info.shape, inputDType: info.dtype, outputDType: out == .f64 ? .f32 : out,
                              globals: globals, perModel: perModel))
        }
        self.items = items
    }

    static func resolve(_ spec: ParameterSpec, _ sources: [[String: ParameterSetting]], tensor: String, t: Double,
                        where place: String) throws -> ParameterValue {
        var value: ParameterValue? = nil
        for s in sources {
            if let setting = s[spec.name], let v = setting.evaluate(tensor: tensor, t: t) { value = v; break }
        }
        guard let v = value ?? spec.defaultValue else {
            throw MergeError.config("\(place): missing required parameter '\(spec.name)' (\(spec.help))")
        }
        switch spec.kind {
        case .number:
            guard let x = v.number, x.isFinite else { throw MergeError.config("\(place): parameter '\(spec.name)' must be a number, got '\(v)'") }
            if let r = spec.range, !r.contains(x) {
                throw MergeError.config("\(place): \(spec.name) = \(v) for '\(tensor)' is outside \(r)")
            }
            return .number(x)
        case .bool:
            guard let b = v.bool else { throw MergeError.config("\(place): parameter '\(spec.name)' must be true or false, got '\(v)'") }
            return .bool(b)
        case .string:
            return v
        }
    }
}

/// Position t ∈ [0, 1] of a tensor's layer in the stack, for gradient parameters: layer i of L has
/// t = i / (L − 1) (t = 1 when L = 1); tensors outside the layer stack (embeddings, final norm, head)
/// have t = 0 — as mergekit's planner assigns them.
struct LayerPosition {
    let count: Int

    init(names: [String], config: HFConfig?) {
        var maxIndex = -1
        for n in names { if let i = Self.layerIndex(n) { maxIndex = max(maxIndex, i) } }
        count = config?.numHiddenLayers ?? (maxIndex + 1)
    }

    func t(for name: String) -> Double {
        guard let i = Self.layerIndex(name) else { return 0 }
        return count > 1 ? Double(i) / Double(count - 1) : 1
    }

    /// The number after `layers.` / `layer.` / `h.` / `blocks.` in a dotted name.
    static func layerIndex(_ name: String) -> Int? {
        let parts = name.split(separator: ".")
        for (k, p) in parts.enumerated() where k + 1 < parts.count && ["layers", "layer", "h", "blocks", "block"].contains(p) {
            if let i = Int(parts[k + 1]) { return i }
        }
        return nil
    }
}
