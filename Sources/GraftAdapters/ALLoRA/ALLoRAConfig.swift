import Foundation
import GraftFormats
import GraftTensor

/// How to build a new ALLoRA adapter (Huang & Balestriero 2024): LoRA of rank r with neither dropout
/// nor a scaling factor (PEFT's LoRA with lora_alpha = r), trained with the per-row gradient scale of
/// `ALLoRAUpdate`. Saved as a plain PEFT LoRA folder (lora_alpha = r, lora_dropout 0), so PEFT, `graft
/// fuse` and merges read it as LoRA; `graft_method` and `graft_settings` (η) let `graft train
/// --adapter` continue it as ALLoRA.
public struct ALLoRAConfig: AdapterRecipe, Equatable {
    public var rank = LoRAConfig.defaultRank
    /// η: the gradient scale where a row of B·A is zero (the start); 1/η² is the floor under the root.
    public var eta = 2.0
    public var targets: ModuleTargets

    public init(targets: ModuleTargets) { self.targets = targets }

    static let info = AdapterMethodInfo(
        name: "allora", summary: "LoRA without dropout or scaling whose gradients are scaled per row by 1/√(‖(BA)ᵢ‖ + 1/η²) (Huang & Balestriero 2024)",
        peftType: "LORA", fusable: true,
        options: [("rank", "rank r (default \(LoRAConfig.defaultRank))"),
                  ("eta", "η: the gradient scale of a row while B·A is zero, 1/√(‖(BA)ᵢ‖ + 1/η²) after (default 2)")],
        recipe: { s in
            var c = ALLoRAConfig(targets: s.targets ?? ModuleTargets(names: LoRAConfig.defaultTargets(llama: s.llama)))
            c.rank = try s.int("rank") ?? c.rank
            c.eta = try s.double("eta") ?? c.eta
            return c
        })

    public var method: String { "allora" }
    public var label: String { "ALLoRA r=\(rank) η=\(eta)" }

    /// The LoRA it trains: alpha = r, so the scaling is 1.
    var lora: LoRAConfig {
        var c = LoRAConfig(rank: rank, alpha: Double(rank), targetModules: [])
        c.targets = targets
        return c
    }

    public func validate() throws {
        guard rank > 0 else { throw LoRAError("ALLoRA rank must be a positive integer (got \(rank))") }
        guard eta > 0, eta.isFinite else { throw LoRAError("ALLoRA --eta must be a positive number (got \(eta))") }
    }

    /// LoRA's initialisation (A Kaiming-uniform, B zero), scale 1, no dropout.
    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate {
        guard let u = try lora.makeUpdate(module: module, weight: weight, inFeatures: inFeatures, outFeatures: outFeatures, seed: seed) as? LoRAUpdate else {
            throw LoRAError("ALLoRA is built on LoRA")
        }
        return ALLoRAUpdate(lora: u, eta: Float(eta))
    }

    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        lora.peftConfig(taskType: taskType, baseModel: baseModel, modulesToSave: modulesToSave).setting("graft_method", .string(method))
            .setting("graft_settings", .object([("eta", .double(eta))]))
    }

    /// The recipe of a saved ALLoRA folder (LoRA's r and targets, η from `graft_settings`).
    static func continuing(_ c: PEFTAdapterConfig) throws -> ALLoRAConfig {
        guard c.loraAlpha == Double(c.r), !c.useRSLoRA else {
            throw FormatError(c.path, "lora_alpha", "an ALLoRA adapter has lora_alpha = r (scaling 1); this one has \(c.loraAlpha) with r = \(c.r)")
        }
        var own = ALLoRAConfig(targets: ModuleTargets(config: c))
        if let layers = c.json["layers_to_transform"]?.arrayValue?.compactMap(\.intValue) { own.targets.layers = layers.map(Int.init) }
        own.rank = c.r
        if let e = c.json["graft_settings"]?["eta"]?.doubleValue { own.eta = e }
        return own
    }
}
