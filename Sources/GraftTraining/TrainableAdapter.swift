import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor

/// The trainable updates of one adapter method attached to a model, plus any fully trained module (a
/// classification head, PEFT's `modules_to_save`): their parameters for the optimizer and the PEFT
/// folder they save as. Method-agnostic: what a method adds is its `LayerUpdate`, how it starts its
/// `AdapterRecipe`.
public struct TrainableAdapter: @unchecked Sendable {
    public struct Module: @unchecked Sendable {
        /// Path in the model (`encoder.layer.0.attention.self.query`).
        public let path: String
        public let update: any LayerUpdate
    }

    public let recipe: any AdapterRecipe
    public let modules: [Module]
    /// What PEFT's task model adds in front of the module paths (`bert.` for BertForSequenceClassification).
    public let peftPrefix: String
    public private(set) var parameters: [TrainableParameter]
    /// Fully trained tensors saved as modules_to_save (name in the task model, shape).
    public private(set) var saved: [(name: String, value: FloatBuffer, shape: [Int])] = []
    public private(set) var modulesToSave: [String] = []
    /// Frozen tensors the modules share (VeRA's projections), saved once under their own names.
    public let shared: [SharedTensor]
    /// The prompt or prefix a sequence method trains (saved as `prompt_embeddings`), and the model's widths for its config.
    public let virtualTokens: VirtualTokens?
    let layout: VirtualTokens.Layout
    /// Full fine-tuning: the layers whose own weight (and bias) train, by module path.
    public let trainedWeights: [(path: String, weight: FloatBuffer, bias: FloatBuffer?)]
    /// Bottleneck adapters: the updates at sublayer sites.
    public let sublayerSites: [SublayerSiteUpdate]

    /// Attaches a new adapter to `model`, each update initialised as PEFT does (`recipe.makeUpdate`).
    /// `from` continues training an existing adapter instead (its tensors copied, its own settings and
    /// targets used; only `dropout` is this run's). `allowHeadOnly` allows a recipe with no target
    /// modules (a linear probe: the caller adds the head). A method that adds virtual tokens (prompt,
    /// prefix) gets them attached to the model's sequence hook instead; `tokenize` encodes a prompt's
    /// initialisation text as the model's tokenizer does.
    public static func attach<M: AdaptableModel>(to model: inout M, recipe: any AdapterRecipe, peftPrefix: String, seed: UInt64,
                                                   from existing: (any LoadedAdapter)? = nil, dropout: Double = 0,
                                                   allowHeadOnly: Bool = false,
                                                   tokenize: @escaping (String) throws -> [Int] = { _ in throw TrainingError("no tokenizer to encode the prompt's text") },
                                                   calibrate: ((inout M, Int) throws -> Void)? = nil)
        throws -> TrainableAdapter {
        var recipe = try existing?.recipe(dropout: dropout) ?? recipe
        try recipe.validate()
        var updates: [(path: String, update: any LayerUpdate)] = []
        var shared = existing?.sharedTensors ?? []
        var params: [TrainableParameter] = []
        var trained: [(path: String, weight: FloatBuffer, bias: FloatBuffer?)] = []
        let layout = model.virtualTokenLayout
        let tokens = try existing?.virtualTokens()
            ?? recipe.virtualPlacement.map { _ in
                try recipe.makeVirtualTokens(layout: layout, embed: model.wordEmbeddings, tokenize: tokenize, seed: seed)
            }
        if let tokens {
            try model.attach(tokens, source: existing?.path ?? recipe.label)
            tokens.makeTrainable()
            if let source = tokens.source {
                // Derived tokens (EPT): their source's parameters train.
                source.makeTrainable()
                for p in source.parameters {
                    params.append(TrainableParameter(name: p.suffix, value: p.value, grad: p.gradient!, shape: p.shape, decay: p.decay))
                }
            } else {
                params.append(TrainableParameter(name: "prompt_embeddings", value: tokens.values, grad: tokens.gradient!,
                                                 shape: [tokens.count, tokens.width], decay: true))
            }
        }
        // Bottleneck adapters: updates at sublayer sites, named as their library names them.
        var sites = existing?.sublayerUpdates() ?? []
        if existing == nil, recipe.addsSublayerUpdates {
            sites = try recipe.makeSublayerUpdates(layers: layout.layers, hidden: layout.hidden, seed: seed)
        }
        for s in sites {
            try model.attach(s.update, layer: s.layer, site: s.site, source: existing?.path ?? recipe.label)
            s.update.makeTrainable()
            for p in s.update.parameters {
                params.append(TrainableParameter(name: s.prefix + p.suffix, value: p.value, grad: p.gradient!, shape: p.shape, decay: p.decay))
            }
        }
        if let existing {
            for (name, u) in existing.layerUpdates(dropout: Float(dropout)) {
                let bare = name.hasPrefix(peftPrefix) ? String(name.dropFirst(peftPrefix.count)) : name
                guard model.linear(bare) != nil else {
                    throw TrainingError("\(existing.path): module '\(name)' is not a linear layer of this model")
                }
                updates.append((bare, u))
            }
        } else if recipe.trainsBaseWeights {
            // Full fine-tuning: the layers' own weights train; their parameters are named by the model's tensors.
            for path in try recipe.targets.select(in: model.linearModuleNames) {
                var layer: Linear? = nil
                _ = model.updateLinear(path) { l in
                    l.trainWeights()
                    layer = l
                }
                guard let l = layer, let g = l.gradients else { continue }
                params.append(TrainableParameter(name: path + ".weight", value: l.weight, grad: g.weight!, shape: [l.outFeatures, l.inFeatures], decay: true))
                if let b = l.bias, let gb = g.bias {
                    params.append(TrainableParameter(name: path + ".bias", value: b, grad: gb, shape: [l.outFeatures], decay: false))
                }
                trained.append((path, l.weight, l.bias))
            }
        } else if recipe.addsSublayerUpdates {
            // (attached above)
        } else if recipe.isHeadOnly {
            guard allowHeadOnly else { throw TrainingError("no target modules given (--targets none trains only a classification head)") }
        } else {
            if recipe.calibrationCount > 0 {
                recipe = try Self.calibrating(recipe, model: &model, run: calibrate)
            }
            let layers = try recipe.targets.select(in: model.linearModuleNames).compactMap { path in
                model.linear(path).map { TargetLayer(module: path, weight: $0.weight, inFeatures: $0.inFeatures, outFeatures: $0.outFeatures) }
            }
            let made = try recipe.makeUpdates(for: layers, seed: seed)
            updates = zip(layers, made.updates).map { ($0.module, $1) }
            shared = made.shared
        }
        var modules: [Module] = []
        for (path, u) in updates {
            _ = try model.updateLinear(path) { l in
                guard l.updates.isEmpty else { throw TrainingError("module '\(path)' already has an adapter attached") }
                try l.attach(u, module: path, source: existing?.path ?? "adapter")
            }
            u.makeTrainable()  // after attaching: an update may take its shape there (`LayerUpdate.fit`)
            let peft = LoRAAdapter.prefix + peftPrefix + path + "."
            for p in u.parameters {
                params.append(TrainableParameter(name: peft + p.suffix, value: p.value, grad: p.gradient!, shape: p.shape, decay: p.decay))
            }
            modules.append(Module(path: path, update: u))
        }
        guard !modules.isEmpty || tokens != nil || !trained.isEmpty || !sites.isEmpty || (allowHeadOnly && recipe.isHeadOnly) else {
            throw TrainingError("the adapter targets no module")
        }
        return TrainableAdapter(recipe: recipe, modules: modules, peftPrefix: peftPrefix, parameters: params, shared: shared,
                                virtualTokens: tokens, layout: layout, trainedWeights: trained, sublayerSites: sites)
    }

    /// PHATGOOSE's gates over an adapter's frozen LoRA modules (attached by the caller): only the gates train.
    static func gates(_ gates: [(String, PhatgooseGate)], recipe: any AdapterRecipe, layout: VirtualTokens.Layout) -> TrainableAdapter {
        var params: [TrainableParameter] = []
        for (path, g) in gates {
            g.makeTrainable()
            for p in g.parameters {
                params.append(TrainableParameter(name: path + "." + p.suffix, value: p.value, grad: p.gradient!, shape: p.shape, decay: p.decay))
            }
        }
        return TrainableAdapter(recipe: recipe, modules: gates.map { Module(path: $0.0, update: $0.1) }, peftPrefix: "", parameters: params,
                                shared: [], virtualTokens: nil, layout: layout, trainedWeights: [], sublayerSites: [])
    }

    /// The recipe with its targets' input covariances: a `CovarianceProbe` on each target while
    /// `run` feeds the model the first `recipe.calibrationCount` training examples, one at a time.
    static func calibrating<M: AdaptableModel>(_ recipe: any AdapterRecipe, model: inout M, run: ((inout M, Int) throws -> Void)?) throws -> any AdapterRecipe {
        guard let run else { throw TrainingError("\(recipe.label) reads training examples before it starts, and this task gives none") }
        var probes: [String: CovarianceProbe] = [:]
        let paths = try recipe.targets.select(in: model.linearModuleNames)
        for path in paths {
            guard let l = model.linear(path) else { continue }
            let probe = CovarianceProbe(inFeatures: l.inFeatures)
            _ = try model.updateLinear(path) { try $0.attach(probe, module: path, source: "calibration") }
            probes[path] = probe
        }
        defer { for path in paths { _ = model.updateLinear(path) { $0.updates.removeAll { $0 is CovarianceProbe } } } }
        try run(&model, recipe.calibrationCount)
        if let silent = probes.first(where: { $0.value.calls == 0 }) { throw TrainingError("calibration never reached '\(silent.key)'") }
        return recipe.calibrated(probes.mapValues(\.covariance))
    }

    private init(recipe: any AdapterRecipe, modules: [Module], peftPrefix: String, parameters: [TrainableParameter], shared: [SharedTensor],
                 virtualTokens: VirtualTokens?, layout: VirtualTokens.Layout, trainedWeights: [(path: String, weight: FloatBuffer, bias: FloatBuffer?)],
                 sublayerSites: [SublayerSiteUpdate]) {
        self.recipe = recipe; self.modules = modules; self.peftPrefix = peftPrefix; self.parameters = parameters; self.shared = shared
        self.virtualTokens = virtualTokens; self.layout = layout; self.trainedWeights = trainedWeights; self.sublayerSites = sublayerSites
    }

    /// Makes `head` fully trainable and saved as `modules_to_save` under `name` (e.g. `classifier`).
    public mutating func trainFully(_ head: inout Linear, name: String) {
        head.trainWeights()
        let g = head.gradients!
        parameters.append(TrainableParameter(name: recipe.savedNamePrefix + name + ".weight", value: head.weight, grad: g.weight!,
                                             shape: [head.outFeatures, head.inFeatures], decay: true))
        saved.append((name + ".weight", head.weight, [head.outFeatures, head.inFeatures]))
        if let bias = head.bias, let gb = g.bias {
            parameters.append(TrainableParameter(name: recipe.savedNamePrefix + name + ".bias", value: bias, grad: gb, shape: [head.outFeatures], decay: false))
            saved.append((name + ".bias", bias, [head.outFeatures]))
        }
        modulesToSave.append(name)
    }

    public var trainableCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    public func zeroGrad() { for p in parameters { p.zeroGrad() } }

    /// Writes the PEFT adapter folder's two files into `directory`: every parameter under its PEFT name
    /// (the trained updates' and the saved modules'), and the recipe's `adapter_config.json`; a method's
    /// training hook has its say on both (`final`: the run's output, else a checkpoint).
    public func save(to directory: String, taskType: String, baseModel: String, hook: (any AdapterTrainingHook)? = nil, final: Bool = true) throws {
        var tensors = (parameters.map { ($0.name, $0.value.tensor(shape: $0.shape)) } + shared.map { ($0.name, $0.value.tensor(shape: $0.shape)) })
            .sorted { $0.0 < $1.0 }
        var config = recipe.peftConfig(taskType: taskType, baseModel: baseModel, modulesToSave: modulesToSave)
        if let v = virtualTokens { config = VirtualTokenAdapter.withLayout(config, layout, placement: v.placement) }
        if let hook { (config, tensors) = try hook.savedAdapter(config: config, tensors: tensors, final: final) }
        try recipe.writeAdapter(to: directory, config: config, tensors: tensors, layout: layout, baseModel: baseModel)
    }

    /// Copies values from tensors named as `parameters` (a checkpoint), checking names and sizes.
    public func load(_ values: [String: FloatBuffer], source: String) throws {
        for p in parameters {
            guard let v = values[p.name] else { throw TrainingError("\(source): missing tensor '\(p.name)'") }
            guard v.count == p.value.count else { throw TrainingError("\(source): tensor '\(p.name)' has \(v.count) values, expected \(p.value.count)") }
            p.value.mutable.baseAddress!.update(from: v.values.baseAddress!, count: v.count)
        }
    }
}

extension AdaptableModel {
    /// Attaches a saved adapter of any method for inference: its layer updates and its virtual tokens.
    public mutating func attach(_ adapter: any LoadedAdapter) throws {
        try attach(adapter.layerUpdates(dropout: 0), source: adapter.path)
        if let tokens = try adapter.virtualTokens() { try attach(tokens, source: adapter.path) }
        for s in adapter.sublayerUpdates() { try attach(s.update, layer: s.layer, site: s.site, source: adapter.path) }
    }
}
