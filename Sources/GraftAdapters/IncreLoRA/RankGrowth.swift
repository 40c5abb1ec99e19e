import Foundation
import GraftFormats
import GraftTensor

/// IncreLoRA's training hook, as the authors' `RankAllocator.update_and_increase` and trainer run it:
///
/// - before each optimizer step: the orthogonality regulariser on each module's live ranks (A's rows,
///   B's columns, the reserve included), mean of ‖A·Aᵀ − I‖_F and ‖Bᵀ·B − I‖_F over every A and B; the
///   frozen reserve E's gradient dropped; and while the budget is not spent, each module's importance
///   s = Σ|ΔW ⊙ ∂L/∂ΔW| / √(out·in) smoothed, Ī ← β₁Ī + (1−β₁)s, Ū ← β₂Ū + (1−β₂)|s − Ī| (β = 0.85);
/// - after step t > warm-up with t % interval = 0: the k = min(top-modules, ranks left) modules of
///   highest Ī·Ū (ties included) each gain `add` ranks: their reserve ranks — A and B trained in
///   advance under a frozen E = 1e-5 — get a trainable E (fresh optimizer state, the learning-rate
///   schedule restarted for it) and a new reserve is drawn, A, B ~ N(0, 0.02); the module's scaling
///   becomes α / (its rank + 1e-5). When the budget is spent the reserves are zeroed and growth ends.
///
/// Graft's departures, for a bounded and exact run: a module stops being chosen at `maxRank`; the
/// last growth step adds only the ranks left (the authors' k counts modules and can overshoot); the
/// reserve exists from step 0 (the authors add it after the first backward, so its first update is
/// one step later).
final class RankGrowth: AdapterTrainingHook {
    static let reserveValue: Float = 1e-5
    static let beta: Float = 0.85

    struct Module {
        let path: String
        let update: AdaLoRAUpdate
        /// Ranks in use, and reserve ranks after them (0 once growth has ended).
        var rank: Int, reserve: Int
        var sensitivity: Float = 0, uncertainty: Float = 0
        var live: Int { rank + reserve }
    }

    let config: IncreLoRAConfig
    let totalSteps: Int, seed: UInt64
    let warmup: Int, interval: Int, topModules: Int
    let targetTotal: Int
    private(set) var modules: [Module]
    private var activated: [(value: FloatBuffer, ranges: [Range<Int>])] = []

    var total: Int { modules.reduce(0) { $0 + $1.rank } }
    var growing: Bool { total < targetTotal }

    init(_ config: IncreLoRAConfig, modules trained: [TrainedModule], totalSteps: Int, seed: UInt64) throws {
        self.config = config; self.totalSteps = totalSteps; self.seed = seed
        modules = try trained.map { m in
            guard let u = m.update as? AdaLoRAUpdate, u.rank == config.capacity else {
                throw LoRAError("module '\(m.path)' is not an IncreLoRA update (\(m.update.method))")
            }
            return Module(path: m.path, update: u, rank: config.initRank, reserve: config.ranksAdded)
        }
        targetTotal = config.targetRank * modules.count
        topModules = config.topModules ?? max(1, (modules.count + 5) / 6)
        warmup = config.warmup ?? totalSteps / 10
        let perStep = max(1, min(topModules, modules.count) * config.ranksAdded)
        let rounds = (targetTotal - config.initRank * modules.count + perStep - 1) / perStep
        interval = config.interval ?? max(1, (totalSteps / 2 - warmup) / max(1, rounds))
        // The growth steps come at t > warm-up with t % interval = 0; the last must fall inside the run.
        let lastGrowth = (warmup / interval + rounds) * interval
        if rounds > 0 && lastGrowth >= totalSteps {
            throw LoRAError("IncreLoRA's budget cannot be met in \(totalSteps) steps: \(rounds) growth steps every \(interval) steps after a warm-up of \(warmup) need \(lastGrowth + 1); give more steps, a smaller --delta-t or --tinit, or more --top-modules")
        }
        if growing { for m in modules { m.update.deltaGradient = FloatBuffer(repeating: 0, count: m.update.outFeatures * m.update.inFeatures) } }
    }

    // MARK: Before the step: regulariser, frozen reserve, importance

    func beforeOptimizerStep() -> Double {
        var total = 0.0
        let coefficient = config.orthRegWeight / Double(2 * max(1, modules.count))
        for m in modules {
            let u = m.update
            let grad = { (s: String) in u.parameters.first { $0.suffix == s }?.gradient }
            if config.orthRegWeight > 0 {
                total += RankAllocator.addOrthogonality(rows: u.a, count: m.live, length: u.inFeatures, transposed: false,
                                                        gradient: grad("lora_A"), weight: Float(coefficient))
                total += RankAllocator.addColumnOrthogonality(u.b, columns: m.live, of: u.rank, rows: u.outFeatures, gradient: grad("lora_B"),
                                                     weight: Float(coefficient))
            }
            if let ge = grad("lora_E") { let g = ge.mutable; for i in m.rank..<m.live { g[i] = 0 } }
        }
        if growing { updateImportance() }
        return coefficient * total
    }

    func updateImportance() {
        let b = Self.beta
        for i in modules.indices {
            let u = modules[i].update
            guard let g = u.deltaGradient else { continue }
            let dv = u.delta().array, gv = g.values
            var s: Float = 0
            for j in 0..<dv.count { s += abs(dv[j] * gv[j]) }
            s /= Float(u.outFeatures * u.inFeatures).squareRoot()
            modules[i].sensitivity = b * modules[i].sensitivity + (1 - b) * s
            modules[i].uncertainty = b * modules[i].uncertainty + (1 - b) * abs(s - modules[i].sensitivity)
            g.mutable.update(repeating: 0)
        }
    }

    // MARK: After the step: growth

    func afterOptimizerStep(_ t: Int) {
        // The reserve's E is frozen (weight decay must not move it either).
        for m in modules { let e = m.update.e.mutable; for i in m.rank..<m.live { e[i] = Self.reserveValue } }
        guard growing, t > warmup, t % interval == 0 else { return }
        grow(at: t)
    }

    func grow(at t: Int) {
        let add = config.ranksAdded
        let eligible = modules.indices.filter { modules[$0].rank + add <= config.rankBound }
        let left = targetTotal - total
        let k = min(topModules, left, eligible.count)
        guard k > 0 else { return }
        let scores = eligible.map { modules[$0].sensitivity * modules[$0].uncertainty }
        let threshold = scores.sorted(by: >)[k - 1]
        // Highest first, so that a budget running out goes to the most important.
        let chosen = zip(eligible, scores).filter { $0.1 >= threshold }.sorted { $0.1 > $1.1 }.map(\.0)
        for i in chosen {
            let n = min(add, targetTotal - total)
            guard n > 0 else { break }
            activate(i, ranks: n, at: t)
        }
        if !growing {
            // Budget spent: the reserves leave the update and the importance is no longer needed.
            for i in modules.indices {
                let e = modules[i].update.e.mutable
                for r in modules[i].rank..<modules[i].live { e[r] = 0 }
                modules[i].reserve = 0
                modules[i].update.deltaGradient = nil
            }
        }
    }

    /// The first `n` reserve ranks of module `i` join the update; `n` new reserve ranks are drawn after the rest.
    func activate(_ i: Int, ranks n: Int, at t: Int) {
        let m = modules[i], u = m.update, cap = u.rank, inF = u.inFeatures, outF = u.outFeatures
        let first = m.rank, newFrom = m.live, newTo = m.live + n
        activated.append((u.e, [first..<(first + n)]))
        var rng = SeededRNG(seed: seed, key: "increlora/\(m.path)/\(t)")
        let av = u.a.mutable, bv = u.b.mutable, ev = u.e.mutable
        for r in newFrom..<newTo { for j in 0..<inF { av[r * inF + j] = 0.02 * rng.nextNormal() } }
        for o in 0..<outF { for r in newFrom..<newTo { bv[o * cap + r] = 0.02 * rng.nextNormal() } }
        for r in newFrom..<newTo { ev[r] = Self.reserveValue }
        activated.append((u.a, [(newFrom * inF)..<(newTo * inF)]))
        activated.append((u.b, (0..<outF).map { o in (o * cap + newFrom)..<(o * cap + newTo) }))
        activated.append((u.e, [newFrom..<newTo]))
        modules[i].rank += n
        u.scale = Float(config.alpha / (Double(modules[i].rank) + 1e-5))
    }

    func takeActivated() -> [(value: FloatBuffer, ranges: [Range<Int>])] {
        defer { activated = [] }
        return activated
    }

    // MARK: Checkpoints and the saved adapter

    func state() -> [(String, Tensor)] {
        modules.map { m in
            ("growth.\(m.path)", FloatBuffer([Float(m.rank), Float(m.reserve), m.sensitivity, m.uncertainty]).tensor(shape: [4]))
        }
    }

    func restore(_ tensors: [String: FloatBuffer], source: String) throws {
        for i in modules.indices {
            let name = "growth.\(modules[i].path)"
            guard let t = tensors[name], t.count == 4 else { throw LoRAError("\(source): missing or misshapen IncreLoRA state '\(name)'") }
            let v = t.array
            guard Int(v[0]) >= config.initRank, Int(v[0]) + Int(v[1]) <= config.capacity else {
                throw LoRAError("\(source): IncreLoRA state '\(name)' has rank \(Int(v[0])) + reserve \(Int(v[1])), outside 0…\(config.capacity)")
            }
            modules[i].rank = Int(v[0]); modules[i].reserve = Int(v[1]); modules[i].sensitivity = v[2]; modules[i].uncertainty = v[3]
            modules[i].update.scale = Float(config.alpha / (Double(modules[i].rank) + 1e-5))
            if !growing { modules[i].update.deltaGradient = nil }
        }
    }

    /// As a PEFT AdaLoRA folder: each module cut to its live ranks (its reserve too while growth had not
    /// ended), init_r the largest of them, and E rescaled so that PEFT's α / (init_r + 1e-5) gives this
    /// module's α / (rank + 1e-5).
    func savedAdapter(config json: JSONValue, tensors: [(String, Tensor)], final: Bool) throws -> (config: JSONValue, tensors: [(String, Tensor)]) {
        let config = json.setting("total_step", .int(Int64(totalSteps)))
        guard final else { return (config, tensors) }
        let r = modules.map(\.live).max() ?? 0
        var out = tensors, pattern: [(String, JSONValue)] = []
        for m in modules {
            let k = m.live, cap = m.update.rank
            let rescale = Float((Double(r) + 1e-5) / (Double(m.rank) + 1e-5))
            for (i, (name, t)) in out.enumerated() where name.hasSuffix("." + m.path + ".lora_A") || name.hasSuffix("." + m.path + ".lora_B")
                || name.hasSuffix("." + m.path + ".lora_E") {
                let v = FloatBuffer(t).array
                if name.hasSuffix(".lora_A") {
                    out[i].1 = FloatBuffer(Array(v[0..<(k * m.update.inFeatures)])).tensor(shape: [k, m.update.inFeatures])
                } else if name.hasSuffix(".lora_B") {
                    let rows = m.update.outFeatures
                    out[i].1 = FloatBuffer((0..<rows).flatMap { o in (0..<k).map { v[o * cap + $0] } }).tensor(shape: [rows, k])
                } else {
                    out[i].1 = FloatBuffer((0..<k).map { v[$0] * rescale }).tensor(shape: [k, 1])
                    pattern.append((String(name.dropFirst(LoRAAdapter.prefix.count)), .array((0..<r).map { .bool($0 < k) })))
                }
            }
        }
        return (config.setting("init_r", .int(Int64(r))).setting("rank_pattern", .object(pattern.sorted { $0.0 < $1.0 })), out)
    }
}
