import Foundation
import GraftFormats
import GraftTensor

/// How to build a new NOLA adapter: LoRA's rank and alpha, the number of random bases for A and for B,
/// the seed they are regenerated from, dropout, targets. NOLA is not in HF PEFT: Graft saves it in PEFT's
/// folder layout with `peft_type` "NOLA" and these keys, and only the coefficients as tensors.
public struct NOLAConfig: AdapterRecipe, Equatable {
    public var rank: Int
    public var alpha: Double
    public var basesA: Int, basesB: Int
    public var seed: UInt64 = 0
    public var dropout: Double = 0
    public var targets: ModuleTargets

    public init(rank: Int, alpha: Double, bases: Int, targets: ModuleTargets) {
        self.rank = rank; self.alpha = alpha; self.basesA = bases; self.basesB = bases; self.targets = targets
    }

    /// Bases per matrix when none is given: 256 (the authors use 64–1024; each layer keeps its bases in
    /// memory, k·r·in + l·out·r floats).
    public static let defaultBases = 256

    static let info = AdapterMethodInfo(
        name: "nola", summary: "LoRA whose A and B are trained mixtures of random bases regenerated from a seed; only the coefficients are stored (Koohpayegani et al. 2024; not in PEFT)",
        peftType: "NOLA", fusable: true,
        options: [("rank", "rank r of the composed A and B (default \(LoRAConfig.defaultRank))"), ("alpha", "alpha (default 2·rank); scaling alpha/r"),
                  ("dropout", "dropout on the adapter's input (default 0)"),
                  ("bases", "random bases for A and for B each (default \(defaultBases))"),
                  ("projection-seed", "seed the bases are regenerated from (default 0)")],
        recipe: { s in
            let r = try s.int("rank") ?? LoRAConfig.defaultRank
            var c = NOLAConfig(rank: r, alpha: try s.double("alpha") ?? Double(2 * r), bases: try s.int("bases") ?? defaultBases,
                               targets: s.targets ?? ModuleTargets(names: LoRAConfig.defaultTargets(llama: s.llama)))
            c.dropout = try s.double("dropout") ?? 0
            c.seed = UInt64(try s.int("projection-seed") ?? 0)
            return c
        })

    public var method: String { "nola" }
    public var label: String { "NOLA r=\(rank), \(basesA)+\(basesB) bases" }
    public var scaling: Double { alpha / Double(rank) }

    public func validate() throws {
        guard rank > 0 else { throw LoRAError("NOLA rank must be a positive integer (got \(rank))") }
        guard basesA > 0, basesB > 0 else { throw LoRAError("NOLA needs at least one basis for A and for B (got \(basesA), \(basesB))") }
        guard alpha > 0, alpha.isFinite else { throw LoRAError("NOLA alpha must be positive (got \(alpha))") }
        guard dropout >= 0 && dropout < 1 else { throw LoRAError("NOLA dropout must be in [0, 1) (got \(dropout))") }
    }

    /// α = 0 (A = A₀, LoRA's start) and β = 0 (B = 0): the update starts at zero.
    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed _: UInt64) throws -> any LayerUpdate {
        let bases = NOLABases(seed: seed, module: module, rank: rank, inFeatures: inFeatures, outFeatures: outFeatures, countA: basesA, countB: basesB)
        return NOLAUpdate(bases: bases, alpha: FloatBuffer(repeating: 0, count: basesA), beta: FloatBuffer(repeating: 0, count: basesB),
                          scale: Float(scaling), dropout: Float(dropout))
    }

    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        .object([
            ("base_model_name_or_path", .string(baseModel)), ("bases_A", .int(Int64(basesA))), ("bases_B", .int(Int64(basesB))),
            ("inference_mode", .bool(true)), ("layers_to_transform", targets.layers.map { .array($0.map { .int(Int64($0)) }) } ?? .null),
            ("lora_alpha", alpha == alpha.rounded() ? .int(Int64(alpha)) : .double(alpha)), ("lora_dropout", .double(dropout)),
            ("modules_to_save", modulesToSave.isEmpty ? .null : .array(modulesToSave.map { .string($0) })),
            ("peft_type", .string("NOLA")), ("r", .int(Int64(rank))), ("seed", .int(Int64(seed))),
            ("target_modules", targets.json), ("task_type", .string(taskType)),
        ])
    }
}
