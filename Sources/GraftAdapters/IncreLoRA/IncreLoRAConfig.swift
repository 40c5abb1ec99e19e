import Foundation
import GraftFormats
import GraftTensor

/// How to build a new IncreLoRA adapter (Zhang et al. 2023, the authors' code at
/// github.com/FeiyuZhang98/IncreLoRA): every module starts at `initRank` ranks of AdaLoRA's SVD-form
/// update and gains `addRank` at a time, the modules with the highest importance first, until the
/// run's budget of `targetRank` per module on average is spent (`RankGrowth`). Saved as a PEFT
/// AdaLoRA folder whose rank_pattern records each module's final rank, so PEFT, `graft fuse` and
/// merges read it as any AdaLoRA adapter.
public struct IncreLoRAConfig: AdapterRecipe, Equatable {
    public var initRank = 1
    /// Average rank per module once the budget is spent.
    public var targetRank = 4
    /// Ranks a chosen module gains at once (the authors' incre_rank_num; nil: half the target rank, at least 1).
    public var addRank: Int? = nil
    /// The most ranks one module may reach (Graft's bound, for memory: the authors' code has none;
    /// nil: four times the target rank).
    public var maxRank: Int? = nil
    /// Modules chosen per growth step (the authors' top_h; nil: a sixth of the modules, at least 1).
    public var topModules: Int? = nil
    /// Steps before the first growth (init_warmup) and between two (incre_interval); nil: 10 % of the
    /// run, and an interval that spends the budget by the middle of the run.
    public var warmup: Int? = nil, interval: Int? = nil
    /// lora_alpha: the update is scaled by α / (the module's current rank).
    public var alpha = 16.0
    public var dropout = 0.0
    /// Weight of the orthogonality regulariser on A's rows and B's columns (the authors' reg_orth_coef).
    public var orthRegWeight = 0.1
    public var targets: ModuleTargets

    public init(targets: ModuleTargets) { self.targets = targets }

    static let info = AdapterMethodInfo(
        name: "increlora", summary: "LoRA in SVD form whose ranks grow during training, added to the most important modules first (Zhang et al. 2023)",
        peftType: "ADALORA", fusable: true,
        options: [("init-rank", "each module's rank at the start (default 1)"),
                  ("target-rank", "average rank per module once the budget is spent (default 4)"),
                  ("add-rank", "ranks a chosen module gains at once (default half the target rank)"),
                  ("max-rank", "the most ranks one module may reach (default 4 × the target rank)"),
                  ("top-modules", "modules chosen at each growth step (default a sixth of the modules)"),
                  ("tinit", "steps before the first growth (default 10 % of the run)"),
                  ("delta-t", "steps between two growth steps (default: the budget is spent by mid-run)"),
                  ("alpha", "lora_alpha: the update is scaled by alpha / the module's rank (default 16)"),
                  ("dropout", "dropout on the adapter's input in training (default 0)"),
                  ("orth-reg", "weight of the orthogonality regulariser on A and B (default 0.1)")],
        recipe: { s in
            var c = IncreLoRAConfig(targets: s.targets ?? ModuleTargets(names: LoRAConfig.defaultTargets(llama: s.llama)))
            c.initRank = try s.int("init-rank") ?? c.initRank
            c.targetRank = try s.int("target-rank") ?? c.targetRank
            c.addRank = try s.int("add-rank"); c.maxRank = try s.int("max-rank"); c.topModules = try s.int("top-modules")
            c.warmup = try s.int("tinit"); c.interval = try s.int("delta-t")
            c.alpha = try s.double("alpha") ?? c.alpha
            c.dropout = try s.double("dropout") ?? c.dropout
            c.orthRegWeight = try s.double("orth-reg") ?? c.orthRegWeight
            return c
        })

    public var method: String { "increlora" }
    public var label: String { "IncreLoRA r=\(initRank)→\(targetRank)" }

    public var ranksAdded: Int { addRank ?? max(1, targetRank / 2) }
    public var rankBound: Int { maxRank ?? max(4 * targetRank, initRank) }
    /// Rows each module holds: its rank bound plus the reserve of `ranksAdded` ranks learnt in advance.
    var capacity: Int { rankBound + ranksAdded }

    public func validate() throws {
        guard initRank > 0 else { throw LoRAError("IncreLoRA --init-rank must be a positive integer (got \(initRank))") }
        guard targetRank >= initRank else {
            throw LoRAError("IncreLoRA --target-rank \(targetRank) cannot be met by growing from --init-rank \(initRank): ranks only grow")
        }
        guard ranksAdded > 0 else { throw LoRAError("IncreLoRA --add-rank must be positive (got \(ranksAdded))") }
        guard rankBound >= targetRank else {
            throw LoRAError("IncreLoRA --max-rank \(rankBound) is below --target-rank \(targetRank): the budget could not be met")
        }
        if let topModules, topModules < 1 { throw LoRAError("IncreLoRA --top-modules must be positive (got \(topModules))") }
        if let warmup, warmup < 0 { throw LoRAError("IncreLoRA --tinit must be ≥ 0") }
        if let interval, interval < 1 { throw LoRAError("IncreLoRA --delta-t must be positive") }
        guard alpha > 0, alpha.isFinite else { throw LoRAError("IncreLoRA lora_alpha must be positive (got \(alpha))") }
        guard dropout >= 0 && dropout < 1 else { throw LoRAError("lora_dropout must be in [0, 1) (got \(dropout))") }
        guard orthRegWeight >= 0 else { throw LoRAError("IncreLoRA --orth-reg must be ≥ 0 (got \(orthRegWeight))") }
    }

    /// The authors' initialisation: the first `initRank` ranks with A, B ~ N(0, 0.02) and E = 0 (the
    /// update starts at zero); the reserve ranks after them with A, B ~ N(0, 0.02) and E = 1e-5, frozen
    /// (their A and B learn in advance); the rest of the capacity zero until it is grown into.
    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate {
        let cap = capacity, live = initRank + ranksAdded
        var rng = SeededRNG(seed: seed, key: "increlora/" + module)
        let a = FloatBuffer(repeating: 0, count: cap * inFeatures), b = FloatBuffer(repeating: 0, count: outFeatures * cap)
        let e = FloatBuffer(repeating: 0, count: cap)
        let av = a.mutable, bv = b.mutable, ev = e.mutable
        for i in 0..<live { for j in 0..<inFeatures { av[i * inFeatures + j] = 0.02 * rng.nextNormal() } }
        for o in 0..<outFeatures { for i in 0..<live { bv[o * cap + i] = 0.02 * rng.nextNormal() } }
        for i in initRank..<live { ev[i] = RankGrowth.reserveValue }
        return AdaLoRAUpdate(a: a, e: e, b: b, rank: cap, inFeatures: inFeatures, outFeatures: outFeatures, alpha: alpha,
                             ranknum: Double(initRank), dropout: Float(dropout))
    }

    public func makeTrainingHook(modules: [TrainedModule], totalSteps: Int, seed: UInt64) throws -> (any AdapterTrainingHook)? {
        try RankGrowth(self, modules: modules, totalSteps: totalSteps, seed: seed)
    }

    /// The folder's config: PEFT's AdaLoRA keys (the rank growth writes init_r, rank_pattern and
    /// total_step), and `graft_method` with IncreLoRA's own settings, which PEFT ignores.
    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        var ada = AdaLoRAConfig(targets: targets)
        ada.initRank = capacity; ada.targetRank = targetRank; ada.alpha = alpha; ada.dropout = dropout; ada.orthRegWeight = orthRegWeight
        return ada.peftConfig(taskType: taskType, baseModel: baseModel, modulesToSave: modulesToSave).setting("graft_method", .string(method))
            .setting("graft_settings", .object([
            ("init_rank", .int(Int64(initRank))), ("target_rank", .int(Int64(targetRank))), ("add_rank", .int(Int64(ranksAdded))),
            ("max_rank", .int(Int64(rankBound))), ("top_modules", topModules.map { .int(Int64($0)) } ?? .null),
            ("warmup", warmup.map { .int(Int64($0)) } ?? .null), ("interval", interval.map { .int(Int64($0)) } ?? .null),
        ]))
    }
}
