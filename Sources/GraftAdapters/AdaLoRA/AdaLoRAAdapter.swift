import Foundation
import GraftFormats
import GraftTensor

/// An HF PEFT AdaLoRA adapter folder: per module `lora_A` [r × in], `lora_E` [r × 1] and `lora_B`
/// [out × r], each cut to the ranks its allocation kept (r may differ per module, and be 0), scaled by
/// lora_alpha / (init_r + 1e-5) as trained; plus `modules_to_save` tensors.
public final class AdaLoRAAdapter: LoadedAdapter, @unchecked Sendable {
    public struct Module: Sendable {
        public let a: Tensor, e: Tensor, b: Tensor
        public var rank: Int { a.shape[0] }
    }

    public let path: String
    public let config: PEFTAdapterConfig
    public let recipeConfig: AdaLoRAConfig
    public let modules: [String: Module]
    public let savedTensors: [(String, Tensor)]

    init(path: String, config: PEFTAdapterConfig) throws {
        self.path = path
        self.config = config
        let json = config.json
        var c = AdaLoRAConfig(targets: ModuleTargets(config: config))
        guard let initR = json["init_r"]?.intValue, initR > 0 else { throw FormatError(config.path, "init_r", "missing or not a positive integer") }
        c.initRank = Int(initR)
        c.targetRank = Int(json["target_r"]?.intValue ?? Int64(c.initRank))
        c.alpha = json["lora_alpha"]?.doubleValue ?? c.alpha
        c.dropout = json["lora_dropout"]?.doubleValue ?? 0
        c.tinit = Int(json["tinit"]?.intValue ?? 0); c.tfinal = Int(json["tfinal"]?.intValue ?? 0); c.deltaT = Int(json["deltaT"]?.intValue ?? 1)
        c.beta1 = json["beta1"]?.doubleValue ?? c.beta1; c.beta2 = json["beta2"]?.doubleValue ?? c.beta2
        c.orthRegWeight = json["orth_reg_weight"]?.doubleValue ?? c.orthRegWeight
        if config.fanInFanOut { throw FormatError(config.path, "fan_in_fan_out", "AdaLoRA with fan_in_fan_out is not supported") }
        recipeConfig = c
        let f = try AdapterFile(folder: path, suffixes: ["lora_A", "lora_B", "lora_E"], marker: ".lora_",
                                unsupported: "unsupported AdaLoRA tensor (bias or embedding AdaLoRA is not supported)")
        var mods: [String: Module] = [:]
        let e = f["lora_E"]
        for (name, (at, bt)) in try f.pairs("lora_A", "lora_B") {
            guard let et = e[name] else { throw FormatError(f.path, name, "has lora_A and lora_B but no lora_E") }
            guard at.shape.count == 2, bt.shape.count == 2, at.shape[0] == bt.shape[1], et.shape == [at.shape[0], 1] else {
                throw FormatError(f.path, name, "lora_A \(at.shape), lora_E \(et.shape) and lora_B \(bt.shape) do not form an AdaLoRA triplet ([r, in], [r, 1], [out, r])")
            }
            guard at.shape[0] <= c.initRank else { throw FormatError(f.path, name, "rank \(at.shape[0]) exceeds init_r \(c.initRank)") }
            guard [at, bt, et].allSatisfy({ $0.dtype.isFloatingPoint }) else { throw FormatError(f.path, name, "AdaLoRA tensors must be floating point") }
            mods[name] = Module(a: at, e: et, b: bt)
        }
        for name in e.keys where mods[name] == nil { throw FormatError(f.path, name, "has lora_E but no lora_A/lora_B") }
        guard !mods.isEmpty || !f.saved.isEmpty else { throw FormatError(f.path, nil, "holds no AdaLoRA or saved tensors") }
        modules = mods
        savedTensors = f.saved
    }

    /// `adalora`, or the Graft method that grew the ranks and saved them in AdaLoRA's form (`graft_method`:
    /// increlora, triadaptlora).
    public var method: String { config.json["graft_method"]?.stringValue ?? "adalora" }
    public var moduleNames: [String] { modules.keys.sorted() }

    func update(_ m: Module, dropout: Float) -> AdaLoRAUpdate {
        AdaLoRAUpdate(a: FloatBuffer(FloatBuffer(m.a).array), e: FloatBuffer(FloatBuffer(m.e).array), b: FloatBuffer(FloatBuffer(m.b).array),
                      rank: m.rank, inFeatures: m.a.shape[1], outFeatures: m.b.shape[0], alpha: recipeConfig.scalingAlpha, ranknum: Double(recipeConfig.initRank), dropout: dropout)
    }

    public func layerUpdates(dropout: Float = 0) -> [(module: String, update: any LayerUpdate)] {
        modules.sorted { $0.key < $1.key }.map { ($0.key, update($0.value, dropout: dropout)) }
    }

    /// W + s·B·(A ⊙ E), as PEFT's merge_and_unload.
    public func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold] {
        var folds: [String: TensorFold] = [:]
        for (tensorName, module) in try weightTensors(in: checkpoint) {
            let m = modules[module]!, shape = checkpoint.info(tensorName)!.shape
            guard shape == [m.b.shape[0], m.a.shape[1]] else {
                throw LoRAError("\(path): module '\(module)' gives a [\(m.b.shape[0]), \(m.a.shape[1])] update but \(checkpoint.path) has '\(tensorName)' of shape \(shape) (adapter for a different base?)")
            }
            folds[tensorName] = adding(update(m, dropout: 0).delta())
        }
        return folds
    }

    /// Continuing an allocated adapter would restart its schedule on ranks already cut; only one saved
    /// before any allocation (full ranks) continues.
    public func recipe(dropout: Double) throws -> any AdapterRecipe {
        guard method == "adalora" else {
            throw LoRAError("\(path): this \(method) adapter's ranks were grown and saved in AdaLoRA's form; its growth cannot be continued — train a new adapter, or continue from a checkpoint of its run")
        }
        guard modules.values.allSatisfy({ $0.rank == recipeConfig.initRank }) else {
            throw LoRAError("\(path): this AdaLoRA adapter's ranks were already allocated (rank_pattern); continuing it would restart the schedule on cut modules — train a new adapter, or continue from a checkpoint of its run")
        }
        var c = recipeConfig
        c.dropout = dropout
        return c
    }

    public var settingsSummary: String {
        let ranks = modules.values.map(\.rank)
        return "\(method == "adalora" ? "AdaLoRA" : method) init_r = \(recipeConfig.initRank), target_r = \(recipeConfig.targetRank), alpha = \(recipeConfig.alpha); final ranks \(ranks.min() ?? 0)–\(ranks.max() ?? 0) (total \(ranks.reduce(0, +)))"
    }
}
