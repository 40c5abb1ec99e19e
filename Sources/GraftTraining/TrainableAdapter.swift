import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor

/// The trainable LoRA (or DoRA) modules attached to a model, plus any fully trained module (a
/// classification head, PEFT's `modules_to_save`): their parameters for the optimizer and the PEFT
/// folder they save as.
public struct TrainableAdapter: @unchecked Sendable {
    public struct Module: @unchecked Sendable {
        /// Path in the model (`encoder.layer.0.attention.self.query`).
        public let path: String
        public let update: LowRankUpdate
        public let inFeatures: Int, outFeatures: Int
    }

    public let config: LoRAConfig
    public let modules: [Module]
    /// What PEFT's task model adds in front of the module paths (`bert.` for BertForSequenceClassification).
    public let peftPrefix: String
    public private(set) var parameters: [TrainableParameter]
    /// Fully trained tensors saved as modules_to_save (name in the task model, shape).
    public private(set) var saved: [(name: String, value: FloatBuffer, shape: [Int])] = []
    public private(set) var modulesToSave: [String] = []

    /// Attaches a new adapter to `model` with PEFT's initialisation: A Kaiming-uniform (a = √5, so
    /// U(−1/√in, 1/√in)), B zero, DoRA's magnitude = the row norms of W. `from` continues training an
    /// existing PEFT adapter instead (its tensors copied, its rank/alpha/targets used).
    /// `headOnly` allows a config with no target modules (a linear probe: the caller adds the head).
    public static func attach<M: LinearLayers>(to model: inout M, config: LoRAConfig, peftPrefix: String, seed: UInt64,
                                                 from existing: LoRAAdapter? = nil, allowHeadOnly: Bool = false) throws -> TrainableAdapter {
        var config = config
        if let existing {
            // Continuing an adapter: its own rank, alpha, scaling rule and targets (only the dropout is
            // this run's choice), so the saved config describes the saved tensors.
            let c = existing.config
            guard c.rankPattern.isEmpty && c.alphaPattern.isEmpty else {
                throw TrainingError("\(existing.path): adapters with rank_pattern or alpha_pattern cannot be continued yet")
            }
            var own = LoRAConfig(rank: c.r, alpha: c.loraAlpha, targetModules: c.targetModules)
            own.dropout = config.dropout; own.useRSLoRA = c.useRSLoRA; own.useDoRA = c.useDoRA
            config = own
        }
        try config.validate()
        let paths: [String]
        if let existing {
            paths = try existing.modules.keys.sorted().map { name in
                let bare = name.hasPrefix(peftPrefix) ? String(name.dropFirst(peftPrefix.count)) : name
                guard model.linear(bare) != nil else {
                    throw TrainingError("\(existing.path): module '\(name)' is not a linear layer of this model")
                }
                return bare
            }
        } else if config.headOnly {
            guard allowHeadOnly else { throw TrainingError("no target modules given (--targets none trains only a classification head)") }
            paths = []
        } else {
            paths = try config.targets(in: model.linearModuleNames)
        }
        var modules: [Module] = [], params: [TrainableParameter] = []
        for path in paths {
            guard let layer = model.linear(path) else { continue }
            let inF = layer.inFeatures, outF = layer.outFeatures
            let a: FloatBuffer, b: FloatBuffer, rank: Int, scale: Float
            var magnitude: FloatBuffer? = nil
            if let e = existing?.modules[peftPrefix + path] ?? existing?.modules[path] {
                rank = e.a.shape[0]
                guard e.a.shape == [rank, inF], e.b.shape == [outF, rank] else {
                    throw TrainingError("\(existing!.path): module '\(path)' has A \(e.a.shape), B \(e.b.shape); the model's layer is [\(outF), \(inF)]")
                }
                a = FloatBuffer(FloatBuffer(e.a).array); b = FloatBuffer(FloatBuffer(e.b).array); scale = Float(e.scaling)
                magnitude = e.magnitude.map { FloatBuffer(FloatBuffer($0).array) }
            } else {
                rank = config.rank; scale = Float(config.scaling)
                var rng = SeededRNG(seed: seed, key: "lora_A/" + path)
                let bound = 1 / Float(inF).squareRoot()
                a = FloatBuffer((0..<(rank * inF)).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound })
                b = FloatBuffer(repeating: 0, count: outF * rank)
                if config.useDoRA {
                    let w = layer.weight.values
                    magnitude = FloatBuffer((0..<outF).map { j in
                        var ss: Float = 0
                        for i in 0..<inF { ss += w[j * inF + i] * w[j * inF + i] }
                        return ss.squareRoot()
                    })
                }
            }
            let u = LowRankUpdate(a: a, b: b, rank: rank, scale: scale, magnitude: magnitude)
            let grads = LinearGradients(a: FloatBuffer(repeating: 0, count: a.count), b: FloatBuffer(repeating: 0, count: b.count),
                                        magnitude: magnitude.map { FloatBuffer(repeating: 0, count: $0.count) })
            _ = try model.updateLinear(path) { l in
                try l.attach(u, module: path, source: "adapter")
                l.gradients = grads
                l.loraDropout = Float(config.dropout)
            }
            let peft = LoRAAdapter.prefix + peftPrefix + path
            params.append(TrainableParameter(name: peft + ".lora_A.weight", value: a, grad: grads.a!, shape: [rank, inF], decay: true))
            params.append(TrainableParameter(name: peft + ".lora_B.weight", value: b, grad: grads.b!, shape: [outF, rank], decay: true))
            if let magnitude {
                params.append(TrainableParameter(name: peft + ".lora_magnitude_vector", value: magnitude, grad: grads.magnitude!,
                                                 shape: [outF], decay: false))
            }
            modules.append(Module(path: path, update: u, inFeatures: inF, outFeatures: outF))
        }
        guard !modules.isEmpty || (allowHeadOnly && config.headOnly) else { throw TrainingError("the adapter targets no module") }
        return TrainableAdapter(config: config, modules: modules, peftPrefix: peftPrefix, parameters: params)
    }

    private init(config: LoRAConfig, modules: [Module], peftPrefix: String, parameters: [TrainableParameter]) {
        self.config = config; self.modules = modules; self.peftPrefix = peftPrefix; self.parameters = parameters
    }

    /// Makes `head` fully trainable and saved as `modules_to_save` under `name` (e.g. `classifier`).
    public mutating func trainFully(_ head: inout Linear, name: String) {
        let g = LinearGradients.zeros(for: head, lowRank: false, full: true)
        head.gradients = g
        head.bf16 = nil; head.f32Training = nil  // copies packed once would not follow the updates
        parameters.append(TrainableParameter(name: LoRAAdapter.prefix + name + ".weight", value: head.weight, grad: g.weight!,
                                             shape: [head.outFeatures, head.inFeatures], decay: true))
        saved.append((name + ".weight", head.weight, [head.outFeatures, head.inFeatures]))
        if let bias = head.bias, let gb = g.bias {
            parameters.append(TrainableParameter(name: LoRAAdapter.prefix + name + ".bias", value: bias, grad: gb, shape: [head.outFeatures], decay: false))
            saved.append((name + ".bias", bias, [head.outFeatures]))
        }
        modulesToSave.append(name)
    }

    public var trainableCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    public func zeroGrad() { for p in parameters { p.zeroGrad() } }

    /// Writes the PEFT adapter folder's two files into `directory`.
    public func save(to directory: String, taskType: String, baseModel: String) throws {
        let tensors = LoRAWriter.tensors(modules.map {
            LoRAWriter.ModuleTensors(module: peftPrefix + $0.path, a: $0.update.a, b: $0.update.b, rank: $0.update.rank,
                                     inFeatures: $0.inFeatures, outFeatures: $0.outFeatures, magnitude: $0.update.magnitude)
        }, saved: saved)
        try LoRAWriter.write(to: directory, config: LoRAWriter.configJSON(config, taskType: taskType, baseModel: baseModel,
                                                                          modulesToSave: modulesToSave), tensors: tensors)
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
