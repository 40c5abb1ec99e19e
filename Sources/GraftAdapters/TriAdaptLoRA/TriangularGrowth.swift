import Foundation
import GraftFormats
import GraftTensor

/// TriAdaptLoRA's training hook (the first author's PEFT port, `update_and_increase`):
///
/// - before each optimizer step: the orthogonality regulariser on each module's live A rows and B
///   columns (C is not regularised), mean of the Frobenius norms over every A and B;
/// - after step t > warm-up with t % interval = 0, while ranks are left: each module's score is the
///   growth of its core's normalised norm since the last growth step, n = ‖L + U‖_F / rank; with
///   progress ρ = (t − warm-up)/(total − warm-up), k = ⌊ρ · ranks left⌋ (linear) or ⌊ranks left^ρ⌋
///   (exponential), clamped to 1…modules; the modules scoring at least the k-th best gain `add` ranks:
///   a new row of L and column of U (diagonal included), a row of A and a column of B, all
///   N(0, 0.02), with fresh optimizer state and the learning-rate schedule restarted for them; the
///   module's scaling becomes α / (rank + 1e-5).
///
/// Graft's departures, as in IncreLoRA's hook: a module stops at `maxRank`, and the last growth step
/// adds only the ranks left.
final class TriangularGrowth: AdapterTrainingHook {
    struct Module {
        let path: String
        let update: TriAdaptLoRAUpdate
        var rank: Int
        /// n at the last growth step (or at the start).
        var lastNorm: Float
    }

    let config: TriAdaptLoRAConfig
    let totalSteps: Int, seed: UInt64
    let targetTotal: Int
    private(set) var modules: [Module]
    private var activated: [(value: FloatBuffer, ranges: [Range<Int>])] = []

    var total: Int { modules.reduce(0) { $0 + $1.rank } }

    init(_ config: TriAdaptLoRAConfig, modules trained: [TrainedModule], totalSteps: Int, seed: UInt64) throws {
        self.config = config; self.totalSteps = totalSteps; self.seed = seed
        guard config.warmup < totalSteps else {
            throw LoRAError("TriAdaptLoRA's budget cannot be met: --tinit \(config.warmup) leaves no step of the \(totalSteps) to grow ranks in")
        }
        modules = try trained.map { m in
            guard let u = m.update as? TriAdaptLoRAUpdate else { throw LoRAError("module '\(m.path)' is not a TriAdaptLoRA update (\(m.update.method))") }
            return Module(path: m.path, update: u, rank: config.initRank, lastNorm: Self.normalisedNorm(u, rank: config.initRank))
        }
        targetTotal = config.targetRank * modules.count
    }

    /// ‖L + U‖_F / rank.
    static func normalisedNorm(_ u: TriAdaptLoRAUpdate, rank: Int) -> Float {
        var ss: Float = 0
        for x in u.core().array { ss += x * x }
        return ss.squareRoot() / Float(rank)
    }

    func beforeOptimizerStep() -> Double {
        guard config.orthRegWeight > 0 else { return 0 }
        let coefficient = config.orthRegWeight / Double(2 * max(1, modules.count))
        var sum = 0.0
        for m in modules {
            let u = m.update
            let grad = { (s: String) in u.parameters.first { $0.suffix == s }?.gradient }
            sum += RankAllocator.addOrthogonality(rows: u.a, count: m.rank, length: u.inFeatures, transposed: false, gradient: grad("lora_A"),
                                                  weight: Float(coefficient))
            sum += RankAllocator.addColumnOrthogonality(u.b, columns: m.rank, of: u.capacity, rows: u.outFeatures, gradient: grad("lora_B"),
                                                     weight: Float(coefficient))
        }
        return coefficient * sum
    }

    /// How many modules the dynamic threshold admits at step t.
    func modulesToGrow(at t: Int) -> Int {
        let left = targetTotal - total
        let rho = Double(t - config.warmup) / Double(totalSteps - config.warmup)
        let k = config.growth == .linear ? Int(Double(left) * rho) : Int(exp(rho * log(Double(max(1, left)))))
        return min(max(k, 1), modules.count)
    }

    func afterOptimizerStep(_ t: Int) {
        guard total < targetTotal, t > config.warmup, t % config.interval == 0 else { return }
        var scores: [Float] = []
        for i in modules.indices {
            let n = Self.normalisedNorm(modules[i].update, rank: modules[i].rank)
            scores.append(n - modules[i].lastNorm)
            modules[i].lastNorm = n
        }
        let add = config.ranksAdded
        let eligible = modules.indices.filter { modules[$0].rank + add <= config.rankBound }
        let k = min(modulesToGrow(at: t), eligible.count)
        guard k > 0 else { return }
        let threshold = eligible.map { scores[$0] }.sorted(by: >)[k - 1]
        for i in eligible.filter({ scores[$0] >= threshold }).sorted(by: { scores[$0] > scores[$1] }) {
            let n = min(add, targetTotal - total)
            guard n > 0 else { break }
            grow(i, ranks: n, at: t)
        }
    }

    /// Module i gains ranks r…r+n−1: a row of L and a column of U each (up to the diagonal), a row of
    /// A and a column of B, drawn N(0, 0.02).
    func grow(_ i: Int, ranks n: Int, at t: Int) {
        let m = modules[i], u = m.update, cap = u.capacity, inF = u.inFeatures, outF = u.outFeatures
        let from = m.rank, to = m.rank + n
        var rng = SeededRNG(seed: seed, key: "triadaptlora/\(m.path)/\(t)")
        let av = u.a.mutable, bv = u.b.mutable, lv = u.lower.mutable, uv = u.upper.mutable
        var lRanges: [Range<Int>] = [], uRanges: [Range<Int>] = []
        for r in from..<to {
            for j in 0...r { lv[r * cap + j] = 0.02 * rng.nextNormal() }
            lRanges.append((r * cap)..<(r * cap + r + 1))
            for q in 0...r { uv[q * cap + r] = 0.02 * rng.nextNormal(); uRanges.append((q * cap + r)..<(q * cap + r + 1)) }
            for j in 0..<inF { av[r * inF + j] = 0.02 * rng.nextNormal() }
            for o in 0..<outF { bv[o * cap + r] = 0.02 * rng.nextNormal() }
        }
        activated.append((u.a, [(from * inF)..<(to * inF)]))
        activated.append((u.b, (0..<outF).map { o in (o * cap + from)..<(o * cap + to) }))
        activated.append((u.lower, lRanges))
        activated.append((u.upper, uRanges))
        modules[i].rank = to
        u.scale = Float(config.alpha / (Double(to) + 1e-5))
    }

    func takeActivated() -> [(value: FloatBuffer, ranges: [Range<Int>])] {
        defer { activated = [] }
        return activated
    }

    func state() -> [(String, Tensor)] {
        modules.map { m in ("growth.\(m.path)", FloatBuffer([Float(m.rank), m.lastNorm]).tensor(shape: [2])) }
    }

    func restore(_ tensors: [String: FloatBuffer], source: String) throws {
        for i in modules.indices {
            let name = "growth.\(modules[i].path)"
            guard let t = tensors[name], t.count == 2, Int(t[0]) >= config.initRank, Int(t[0]) <= config.rankBound else {
                throw LoRAError("\(source): missing or misshapen TriAdaptLoRA state '\(name)'")
            }
            modules[i].rank = Int(t[0]); modules[i].lastNorm = t[1]
            modules[i].update.scale = Float(config.alpha / (Double(modules[i].rank) + 1e-5))
        }
    }

    /// As a PEFT AdaLoRA folder: per module A' = C·A and B cut to its rank, E rescaling PEFT's
    /// α / (init_r + 1e-5) to this module's α / (rank + 1e-5), init_r the largest rank.
    func savedAdapter(config json: JSONValue, tensors: [(String, Tensor)], final: Bool) throws -> (config: JSONValue, tensors: [(String, Tensor)]) {
        let config = json.setting("total_step", .int(Int64(totalSteps)))
        guard final else { return (config, tensors) }
        let r = modules.map(\.rank).max() ?? 0
        var pattern: [(String, JSONValue)] = []
        var out: [(String, Tensor)] = []
        let suffixes = [".lora_A", ".lora_B", ".lora_C_lower", ".lora_C_upper"]
        for (name, t) in tensors {
            guard let m = modules.first(where: { m in suffixes.contains { name.hasSuffix("." + m.path + $0) } }) else { out.append((name, t)); continue }
            guard name.hasSuffix(".lora_A") else { continue }
            let stem = String(name.dropLast(".lora_A".count)), k = m.rank
            let (a, b) = m.update.folded(rank: k)
            let rescale = Float((Double(r) + 1e-5) / (Double(k) + 1e-5))
            out.append((stem + ".lora_A", FloatBuffer(a).tensor(shape: [k, m.update.inFeatures])))
            out.append((stem + ".lora_B", FloatBuffer(b).tensor(shape: [m.update.outFeatures, k])))
            out.append((stem + ".lora_E", FloatBuffer(repeating: rescale, count: k).tensor(shape: [k, 1])))
            pattern.append((String(stem.dropFirst(LoRAAdapter.prefix.count)) + ".lora_E", .array((0..<r).map { .bool($0 < k) })))
        }
        return (config.setting("init_r", .int(Int64(r))).setting("rank_pattern", .object(pattern.sorted { $0.0 < $1.0 })), out.sorted { $0.0 < $1.0 })
    }
}
