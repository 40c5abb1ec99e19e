import Foundation
import GraftFormats
import GraftTensor

/// How to build a new AdaLoRA adapter, with PEFT's `AdaLoraConfig` meanings: every module starts at
/// `initRank` ranks; a budget of `targetRank` per module on average is reached by pruning the least
/// important ranks (`RankAllocator`), after `tinit` warm-up steps, every `deltaT` steps on a cubic
/// schedule, the last `tfinal` steps at the final budget; `orthRegWeight` weighs the regulariser that
/// keeps A's rows and B's columns orthonormal.
public struct AdaLoRAConfig: AdapterRecipe, Equatable {
    public var initRank = 12
    public var targetRank = 8
    /// PEFT's `lora_alpha`; the update is scaled by α / ranknum (α = the initial rank when 0).
    public var alpha = 8.0
    public var dropout = 0.0
    public var tinit = 0, tfinal = 0, deltaT = 1
    /// EMA factors of the sensitivity and of its uncertainty.
    public var beta1 = 0.85, beta2 = 0.85
    public var orthRegWeight = 0.5
    public var targets: ModuleTargets

    public init(targets: ModuleTargets) { self.targets = targets }

    static let info = AdapterMethodInfo(
        name: "adalora", summary: "LoRA in SVD form whose rank budget is moved to the modules that matter, by importance (Zhang et al. 2023)",
        peftType: "ADALORA", fusable: true,
        options: [("init-rank", "each module's rank at the start (PEFT's init_r, default 12)"),
                  ("target-rank", "average rank per module at the end (PEFT's target_r, default 8)"),
                  ("alpha", "lora_alpha: the update is scaled by alpha / init-rank (default 8)"),
                  ("dropout", "dropout on the adapter's input in training (default 0)"),
                  ("tinit", "warm-up steps before any rank is pruned (default 0)"),
                  ("tfinal", "last steps trained at the final budget (default 0)"),
                  ("delta-t", "steps between two budget allocations (PEFT's deltaT, default 1)"),
                  ("orth-reg", "weight of the orthogonality regulariser on A and B (PEFT's orth_reg_weight, default 0.5)")],
        recipe: { s in
            var c = AdaLoRAConfig(targets: s.targets ?? ModuleTargets(names: LoRAConfig.defaultTargets(llama: s.llama)))
            c.initRank = try s.int("init-rank") ?? c.initRank
            c.targetRank = try s.int("target-rank") ?? min(c.targetRank, c.initRank)
            c.alpha = try s.double("alpha") ?? c.alpha
            c.dropout = try s.double("dropout") ?? c.dropout
            c.tinit = try s.int("tinit") ?? c.tinit
            c.tfinal = try s.int("tfinal") ?? c.tfinal
            c.deltaT = try s.int("delta-t") ?? c.deltaT
            c.orthRegWeight = try s.double("orth-reg") ?? c.orthRegWeight
            return c
        })

    public var method: String { "adalora" }
    public var label: String { "AdaLoRA r=\(initRank)→\(targetRank)" }

    /// The scaling's numerator: lora_alpha, or the initial rank when alpha is 0 (PEFT).
    var scalingAlpha: Double { alpha > 0 ? alpha : Double(initRank) }

    public func validate() throws {
        guard initRank > 0 else { throw LoRAError("AdaLoRA --init-rank must be a positive integer (got \(initRank))") }
        guard targetRank > 0, targetRank <= initRank else {
            throw LoRAError("AdaLoRA --target-rank \(targetRank) cannot be met from --init-rank \(initRank): it must be between 1 and the initial rank")
        }
        guard alpha >= 0, alpha.isFinite else { throw LoRAError("AdaLoRA lora_alpha must be ≥ 0 (got \(alpha))") }
        guard dropout >= 0 && dropout < 1 else { throw LoRAError("lora_dropout must be in [0, 1) (got \(dropout))") }
        guard tinit >= 0, tfinal >= 0, deltaT > 0 else { throw LoRAError("AdaLoRA --tinit and --tfinal must be ≥ 0 and --delta-t positive") }
        guard orthRegWeight >= 0 else { throw LoRAError("AdaLoRA --orth-reg must be ≥ 0 (got \(orthRegWeight))") }
    }

    /// PEFT's initialisation: A and B normal(0, 0.02) from streams keyed by the module path, E zero (so
    /// the adapter starts as the identity).
    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate {
        var rng = SeededRNG(seed: seed, key: "adalora/" + module)
        let a = FloatBuffer((0..<(initRank * inFeatures)).map { _ in 0.02 * rng.nextNormal() })
        let b = FloatBuffer((0..<(outFeatures * initRank)).map { _ in 0.02 * rng.nextNormal() })
        return AdaLoRAUpdate(a: a, e: FloatBuffer(repeating: 0, count: initRank), b: b, rank: initRank, inFeatures: inFeatures, outFeatures: outFeatures, alpha: scalingAlpha,
                             ranknum: Double(initRank), dropout: Float(dropout))
    }

    /// The rank allocator, for a run of `totalSteps` (PEFT's `total_step`): the warm-up and final phase
    /// must leave room for the schedule.
    public func makeTrainingHook(modules: [TrainedModule], totalSteps: Int, seed: UInt64) throws -> (any AdapterTrainingHook)? {
        guard tinit < totalSteps - tfinal else {
            throw LoRAError("AdaLoRA's schedule does not fit the run: --tinit \(tinit) + --tfinal \(tfinal) leave no step of the \(totalSteps) to allocate ranks in (PEFT requires tinit < total_step − tfinal)")
        }
        return try RankAllocator(self, modules: modules, totalSteps: totalSteps)
    }

    /// The config PEFT 0.21 reads back; `totalSteps` and `rankPattern` (module key → kept ranks) are
    /// the run's, written by the rank allocator.
    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        peftConfig(taskType: taskType, baseModel: baseModel, modulesToSave: modulesToSave, totalSteps: nil, rankPattern: nil)
    }

    func peftConfig(taskType: String, baseModel: String, modulesToSave: [String], totalSteps: Int?, rankPattern: [(String, [Bool])]?) -> JSONValue {
        func num(_ d: Double) -> JSONValue { d == d.rounded() && abs(d) < 1e15 ? .int(Int64(d)) : .double(d) }
        return .object([
            ("base_model_name_or_path", .string(baseModel)), ("beta1", .double(beta1)), ("beta2", .double(beta2)), ("bias", .string("none")),
            ("deltaT", .int(Int64(deltaT))), ("fan_in_fan_out", .bool(false)), ("inference_mode", .bool(true)),
            ("init_lora_weights", .bool(true)), ("init_r", .int(Int64(initRank))), ("layers_pattern", .null),
            ("layers_to_transform", targets.layers.map { .array($0.map { .int(Int64($0)) }) } ?? .null),
            ("lora_alpha", num(alpha)), ("lora_dropout", .double(dropout)),
            ("modules_to_save", modulesToSave.isEmpty ? .null : .array(modulesToSave.map { .string($0) })),
            ("orth_reg_weight", .double(orthRegWeight)), ("peft_type", .string("ADALORA")), ("r", .int(8)),
            ("rank_pattern", rankPattern.map { .object($0.map { ($0.0, .array($0.1.map { .bool($0) })) }) } ?? .null),
            ("revision", .null), ("target_modules", targets.json), ("target_r", .int(Int64(targetRank))),
            ("task_type", .string(taskType)), ("tfinal", .int(Int64(tfinal))), ("tinit", .int(Int64(tinit))),
            ("total_step", totalSteps.map { .int(Int64($0)) } ?? .null), ("use_dora", .bool(false)), ("use_rslora", .bool(false)),
        ])
    }
}
