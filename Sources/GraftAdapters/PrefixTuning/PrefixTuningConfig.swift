import Foundation
import GraftFormats
import GraftTensor

/// How to build a new prefix-tuning adapter (Li & Liang 2021; PEFT `PrefixTuningConfig` without
/// `prefix_projection`): `virtualTokens` learned keys and values ahead of every layer's, every token
/// attending to them, the model frozen. They start as N(0, 1) draws (`torch.nn.Embedding`'s init, as
/// PEFT's). PEFT's optional reparameterisation through an MLP (`prefix_projection`) is a training-time
/// detail; its saved adapters hold the final keys and values, which Graft reads.
public struct PrefixTuningConfig: AdapterRecipe, Equatable {
    public var virtualTokens: Int

    public init(virtualTokens: Int) { self.virtualTokens = virtualTokens }

    public static let defaultVirtualTokens = 20

    static let info = AdapterMethodInfo(
        name: "prefix", summary: "learned keys and values ahead of every layer's; the model stays frozen (Li & Liang 2021, prefix tuning)",
        peftType: "PREFIX_TUNING", fusable: false,
        options: [("virtual-tokens", "prefix length in virtual tokens per layer (default \(defaultVirtualTokens)); they count against the model's context")],
        recipe: { s in PrefixTuningConfig(virtualTokens: try s.int("virtual-tokens") ?? defaultVirtualTokens) })

    public var method: String { "prefix" }
    public var label: String { "prefix tuning, \(virtualTokens) tokens" }
    public var targets: ModuleTargets { ModuleTargets(names: []) }
    public var virtualPlacement: VirtualTokens.Placement? { .keysValues }
    public var savedNamePrefix: String { "base_model." }
    public var reservedPositions: Int { virtualTokens }

    public func validate() throws {
        guard virtualTokens > 0 else { throw LoRAError("prefix tuning needs at least one virtual token (got \(virtualTokens))") }
    }

    public func makeVirtualTokens(layout: VirtualTokens.Layout, embed: ([Int]) throws -> FloatBuffer, tokenize: (String) throws -> [Int],
                                  seed: UInt64) throws -> VirtualTokens {
        guard virtualTokens < layout.contextLength else {
            throw LoRAError("\(virtualTokens) virtual tokens fill the model's context of \(layout.contextLength) positions: nothing left for the text")
        }
        let width = layout.width(.keysValues)
        var rng = SeededRNG(seed: seed, key: "prefix")
        return VirtualTokens(placement: .keysValues, count: virtualTokens, width: width,
                             values: FloatBuffer((0..<(virtualTokens * width)).map { _ in rng.nextNormal() }))
    }

    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        VirtualTokenAdapter.config(peftType: "PREFIX_TUNING", virtualTokens: virtualTokens, taskType: taskType, baseModel: baseModel,
                                   modulesToSave: modulesToSave, extra: [("encoder_hidden_size", .null), ("prefix_projection", .bool(false))])
    }
}
