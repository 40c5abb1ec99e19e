import Foundation
import GraftFormats
import GraftTensor

/// How to build a new TriAdaptLoRA adapter (Liang, Wang, Zeng 2025): ΔW = B·(L + U)·A·α/r with a
/// triangular split of the core, ranks grown to the modules whose core's normalised Frobenius norm
/// grew most, as many modules at once as a threshold that rises with training progress allows
/// (`TriangularGrowth`). The paper's code is not public: this follows the first author's PEFT port
/// (DiverValue-Bench, `triadaptlora` "single" variant). Saved as a PEFT AdaLoRA folder (A' = C·A, the
/// ranks in rank_pattern), so PEFT, `graft fuse` and merges read it.
public struct TriAdaptLoRAConfig: AdapterRecipe, Equatable {
    public enum Growth: String, Sendable, CaseIterable { case linear, exponential }

    public var initRank = 1
    /// Average rank per module once the budget is spent (the port's reference_rank).
    public var targetRank = 8
    /// Ranks a chosen module gains at once (nil: half the target rank).
    public var addRank: Int? = nil
    /// The most ranks one module may reach (Graft's bound; nil: four times the target rank).
    public var maxRank: Int? = nil
    public var warmup = 0, interval = 1
    public var growth = Growth.linear
    public var alpha = 16.0
    public var dropout = 0.0
    public var orthRegWeight = 0.5
    public var targets: ModuleTargets

    public init(targets: ModuleTargets) { self.targets = targets }

    static let info = AdapterMethodInfo(
        name: "triadaptlora", summary: "LoRA with a triangular core B·(L+U)·A whose ranks grow where the core's norm grows, on a dynamic threshold (Liang et al. 2025)",
        peftType: "ADALORA", fusable: true,
        options: [("init-rank", "each module's rank at the start (default 1)"),
                  ("target-rank", "average rank per module once the budget is spent (default 8)"),
                  ("add-rank", "ranks a chosen module gains at once (default half the target rank)"),
                  ("max-rank", "the most ranks one module may reach (default 4 × the target rank)"),
                  ("tinit", "steps before the first growth (default 0)"),
                  ("delta-t", "steps between two growth steps (default 1)"),
                  ("growth", "how the number of modules grown rises with progress ρ: linear (ρ · ranks left) or exponential (ranks left^ρ) (default linear)"),
                  ("alpha", "lora_alpha: the update is scaled by alpha / the module's rank (default 16)"),
                  ("dropout", "dropout on the adapter's input in training (default 0)"),
                  ("orth-reg", "weight of the orthogonality regulariser on A and B (default 0.5)")],
        recipe: { s in
            var c = TriAdaptLoRAConfig(targets: s.targets ?? ModuleTargets(names: LoRAConfig.defaultTargets(llama: s.llama)))
            c.initRank = try s.int("init-rank") ?? c.initRank
            c.targetRank = try s.int("target-rank") ?? c.targetRank
            c.addRank = try s.int("add-rank"); c.maxRank = try s.int("max-rank")
            c.warmup = try s.int("tinit") ?? c.warmup
            c.interval = try s.int("delta-t") ?? c.interval
            if let g = s.values["growth"] {
                guard let v = Growth(rawValue: g) else { throw LoRAError("--growth: '\(g)' is not linear or exponential") }
                c.growth = v
            }
            c.alpha = try s.double("alpha") ?? c.alpha
            c.dropout = try s.double("dropout") ?? c.dropout
            c.orthRegWeight = try s.double("orth-reg") ?? c.orthRegWeight
            return c
        })

    public var method: String { "triadaptlora" }
    public var label: String { "TriAdaptLoRA r=\(initRank)→\(targetRank)" }
    public var ranksAdded: Int { addRank ?? max(1, targetRank / 2) }
    public var rankBound: Int { maxRank ?? max(4 * targetRank, initRank) }

    public func validate() throws {
        guard initRank > 0 else { throw LoRAError("TriAdaptLoRA --init-rank must be a positive integer (got \(initRank))") }
        guard targetRank >= initRank else {
            throw LoRAError("TriAdaptLoRA --target-rank \(targetRank) cannot be met by growing from --init-rank \(initRank): ranks only grow")
        }
        guard ranksAdded > 0 else { throw LoRAError("TriAdaptLoRA --add-rank must be positive (got \(ranksAdded))") }
        guard rankBound >= targetRank else {
            throw LoRAError("TriAdaptLoRA --max-rank \(rankBound) is below --target-rank \(targetRank): the budget could not be met")
        }
        guard warmup >= 0, interval > 0 else { throw LoRAError("TriAdaptLoRA --tinit must be ≥ 0 and --delta-t positive") }
        guard alpha > 0, alpha.isFinite else { throw LoRAError("TriAdaptLoRA lora_alpha must be positive (got \(alpha))") }
        guard dropout >= 0 && dropout < 1 else { throw LoRAError("lora_dropout must be in [0, 1) (got \(dropout))") }
        guard orthRegWeight >= 0 else { throw LoRAError("TriAdaptLoRA --orth-reg must be ≥ 0 (got \(orthRegWeight))") }
    }

    /// The port's initialisation: the first `initRank` ranks of A, L and U ~ N(0, 0.02) and B zero (the
    /// update starts at zero); the rest of the bound zero until it is grown into.
    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate {
        let cap = rankBound, r0 = initRank
        var rng = SeededRNG(seed: seed, key: "triadaptlora/" + module)
        let a = FloatBuffer(repeating: 0, count: cap * inFeatures), l = FloatBuffer(repeating: 0, count: cap * cap)
        let u = FloatBuffer(repeating: 0, count: cap * cap)
        let av = a.mutable, lv = l.mutable, uv = u.mutable
        for i in 0..<r0 { for j in 0..<inFeatures { av[i * inFeatures + j] = 0.02 * rng.nextNormal() } }
        for i in 0..<r0 { for j in 0...i { lv[i * cap + j] = 0.02 * rng.nextNormal() } }
        for j in 0..<r0 { for i in 0...j { uv[i * cap + j] = 0.02 * rng.nextNormal() } }
        return TriAdaptLoRAUpdate(a: a, b: FloatBuffer(repeating: 0, count: outFeatures * cap), lower: l, upper: u, capacity: cap,
                                  inFeatures: inFeatures, outFeatures: outFeatures, scale: Float(alpha / (Double(r0) + 1e-5)),
                                  dropout: Float(dropout))
    }

    public func makeTrainingHook(modules: [TrainedModule], totalSteps: Int, seed: UInt64) throws -> (any AdapterTrainingHook)? {
        try TriangularGrowth(self, modules: modules, totalSteps: totalSteps, seed: seed)
    }

    /// PEFT's AdaLoRA keys (the growth writes init_r, rank_pattern, total_step) and `graft_method` with
    /// TriAdaptLoRA's settings, which PEFT ignores.
    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        var ada = AdaLoRAConfig(targets: targets)
        ada.initRank = rankBound; ada.targetRank = targetRank; ada.alpha = alpha; ada.dropout = dropout; ada.orthRegWeight = orthRegWeight
        return ada.peftConfig(taskType: taskType, baseModel: baseModel, modulesToSave: modulesToSave).setting("graft_method", .string(method))
            .setting("graft_settings", .object([
            ("init_rank", .int(Int64(initRank))), ("target_rank", .int(Int64(targetRank))), ("add_rank", .int(Int64(ranksAdded))),
            ("max_rank", .int(Int64(rankBound))), ("warmup", .int(Int64(warmup))), ("interval", .int(Int64(interval))),
            ("growth", .string(growth.rawValue)),
        ]))
    }
}
