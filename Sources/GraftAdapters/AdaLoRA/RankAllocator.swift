import Foundation
import GraftFormats
import GraftTensor

/// AdaLoRA's training hook (PEFT `RankAllocator` and `AdaLoraModel.update_and_allocate`/`forward`):
///
/// - before each optimizer step, the orthogonal regulariser R = mean over every A and B of
///   ‖A·Aᵀ − I‖_F and ‖Bᵀ·B − I‖_F, weighted by `orth_reg_weight`, adds to the loss and its gradient to
///   A's and B's;
/// - after each step t (0-based) before `total_step − tfinal`: each A, B, E entry's sensitivity
///   I = |θ·∇θ| is smoothed, Ī ← β₁Ī + (1−β₁)I, with its uncertainty Ū ← β₂Ū + (1−β₂)|I − Ī|; on the
///   schedule's mask steps, rank i of a module scores S_i = Ī_E,i·Ū_E,i + mean_j(Ī_A·Ū_A)_ij +
///   mean_k(Ī_B·Ū_B)_ki, and every rank whose score is ≤ the (init budget − budget)-th smallest score
///   over all modules gets E_i = 0 (the rank pattern records which survive);
/// - at t = total_step − tfinal the final budget is forced (the pattern fixed, the scores reset); after
///   it, every step re-applies the fixed pattern.
///
/// The budget (ranks over all modules) falls from init_r·modules to target_r·modules on a cubic
/// schedule: b(t) = init for t ≤ tinit, target for t > total − tfinal, else
/// ⌊(init − target)·(1 − (t − tinit)/(total − tfinal − tinit))³ + target⌋, masking when t % deltaT = 0.
final class RankAllocator: AdapterTrainingHook {
    struct Module {
        let path: String
        let update: AdaLoRAUpdate
        /// Smoothed sensitivity and uncertainty of A, B and E.
        var sensitivity: [FloatBuffer], uncertainty: [FloatBuffer]
    }

    let config: AdaLoRAConfig
    let totalSteps: Int
    private(set) var modules: [Module]
    /// Per module (in `modules` order): which ranks survive; nil before the first allocation.
    private(set) var rankPattern: [[Bool]]?
    var initialBudget: Int { modules.count * config.initRank }
    var targetBudget: Int { modules.count * config.targetRank }

    init(_ config: AdaLoRAConfig, modules trained: [TrainedModule], totalSteps: Int) throws {
        self.config = config; self.totalSteps = totalSteps
        modules = try trained.map { m in
            guard let u = m.update as? AdaLoRAUpdate else { throw LoRAError("module '\(m.path)' is not an AdaLoRA update (\(m.update.method))") }
            let zeros = { [u.a, u.b, u.e].map { FloatBuffer(repeating: 0, count: $0.count) } }
            return Module(path: m.path, update: u, sensitivity: zeros(), uncertainty: zeros())
        }
    }

    /// The total rank budget at step t and whether the step allocates it.
    func budget(at t: Int) -> (budget: Int, mask: Bool) {
        let (ti, tf, total) = (config.tinit, config.tfinal, totalSteps)
        if t <= ti { return (initialBudget, false) }
        if t > total - tf { return (targetBudget, true) }
        let c = 1 - Double(t - ti) / Double(total - tf - ti)
        return (Int(Double(initialBudget - targetBudget) * c * c * c + Double(targetBudget)), t % config.deltaT == 0)
    }

    // MARK: Orthogonal regulariser

    func beforeOptimizerStep() -> Double {
        guard config.orthRegWeight > 0, !modules.isEmpty else { return 0 }
        let coefficient = config.orthRegWeight / Double(2 * modules.count)
        var total = 0.0
        for m in modules {
            let u = m.update, r = u.rank
            guard r > 0, let pa = u.parameters.first(where: { $0.suffix == "lora_A" }), let pb = u.parameters.first(where: { $0.suffix == "lora_B" })
            else { continue }
            total += Self.addOrthogonality(rows: u.a, count: r, length: u.inFeatures, transposed: false, gradient: pa.gradient, weight: Float(coefficient))
            total += Self.addOrthogonality(rows: u.b, count: r, length: u.outFeatures, transposed: true, gradient: pb.gradient, weight: Float(coefficient))
        }
        return coefficient * total
    }

    /// ‖M − I‖_F for the r×r Gram matrix of r vectors — A's rows (M = A·Aᵀ, A [r × n]) or, `transposed`,
    /// B's columns (M = Bᵀ·B, B [n × r]) — and adds `weight` · its gradient, 2·G·A or 2·B·G with
    /// G = (M − I)/‖M − I‖_F, to `gradient`.
    static func addOrthogonality(rows v: FloatBuffer, count r: Int, length n: Int, transposed: Bool, gradient: FloatBuffer?, weight: Float) -> Double {
        let m = FloatBuffer(count: r * r)
        return withExtendedLifetime(m) { orthogonality(v, gram: m, count: r, length: n, transposed: transposed, gradient: gradient, weight: weight) }
    }

    /// ‖BᵀB − I‖_F over B's first `columns` columns (B [rows × of]), its weighted gradient added.
    static func addColumnOrthogonality(_ b: FloatBuffer, columns k: Int, of cap: Int, rows: Int, gradient: FloatBuffer?, weight: Float) -> Double {
        let bv = b.values
        let sub = FloatBuffer((0..<rows).flatMap { o in (0..<k).map { bv[o * cap + $0] } })
        let g = gradient.map { _ in FloatBuffer(repeating: 0, count: rows * k) }
        let norm = RankAllocator.addOrthogonality(rows: sub, count: k, length: rows, transposed: true, gradient: g, weight: weight)
        if let gradient, let g {
            let gv = gradient.mutable, sg = g.array
            for o in 0..<rows { for j in 0..<k { gv[o * cap + j] += sg[o * k + j] } }
        }
        return norm
    }

    private static func orthogonality(_ v: FloatBuffer, gram m: FloatBuffer, count r: Int, length n: Int, transposed: Bool, gradient: FloatBuffer?,
                                      weight: Float) -> Double {
        if transposed {
            Linalg.gemm(m: r, n: r, k: n, a: v.values.baseAddress!, transA: true, b: v.values.baseAddress!, c: m.mutable.baseAddress!)
        } else {
            Linalg.gemm(m: r, n: r, k: n, a: v.values.baseAddress!, b: v.values.baseAddress!, transB: true, c: m.mutable.baseAddress!)
        }
        let mv = m.mutable
        var ss = 0.0
        for i in 0..<r { mv[i * r + i] -= 1 }
        for x in mv { ss += Double(x) * Double(x) }
        let norm = ss.squareRoot()
        guard let gradient, norm > 0 else { return norm }
        let alpha = 2 * weight / Float(norm)
        if transposed {  // dB += α·B·G, B [n × r]
            Linalg.gemm(m: n, n: r, k: r, alpha: alpha, a: v.values.baseAddress!, b: m.values.baseAddress!, beta: 1, c: gradient.mutable.baseAddress!)
        } else {  // dA += α·G·A, A [r × n]
            Linalg.gemm(m: r, n: n, k: r, alpha: alpha, a: m.values.baseAddress!, b: v.values.baseAddress!, beta: 1, c: gradient.mutable.baseAddress!)
        }
        return norm
    }

    // MARK: Rank allocation

    func afterOptimizerStep(_ t: Int) {
        let end = totalSteps - config.tfinal
        if t < end {
            updateImportance()
            let (b, allocates) = budget(at: t)
            if allocates { rankPattern = mask(to: b) }
        } else if t == end {
            rankPattern = mask(to: budget(at: t).budget)
            for i in modules.indices { for k in 0..<3 { modules[i].sensitivity[k].mutable.update(repeating: 0); modules[i].uncertainty[k].mutable.update(repeating: 0) } }
        } else if let pattern = rankPattern {
            for (m, keep) in zip(modules, pattern) { Self.apply(keep, to: m.update.e) }
        }
    }

    func updateImportance() {
        let (b1, b2) = (Float(config.beta1), Float(config.beta2))
        for m in modules {
            let params = [m.update.a, m.update.b, m.update.e]
            let grads = ["lora_A", "lora_B", "lora_E"].map { s in m.update.parameters.first { $0.suffix == s }?.gradient }
            for k in 0..<3 {
                guard let g = grads[k] else { continue }
                let p = params[k].values, gv = g.values, s = m.sensitivity[k].mutable, u = m.uncertainty[k].mutable
                for j in 0..<p.count {
                    let ipt = abs(p[j] * gv[j])
                    s[j] = b1 * s[j] + (1 - b1) * ipt
                    u[j] = b2 * u[j] + (1 - b2) * abs(ipt - s[j])
                }
            }
        }
    }

    /// Each module's rank scores S_i (see the type's comment).
    func scores() -> [[Float]] {
        modules.map { m in
            let r = m.update.rank, inF = m.update.inFeatures, outF = m.update.outFeatures
            let score = (0..<3).map { k in zip(m.sensitivity[k].values, m.uncertainty[k].values).map { $0 * $1 } }
            return (0..<r).map { i in
                var sa: Float = 0, sb: Float = 0
                for j in 0..<inF { sa += score[0][i * inF + j] }
                for o in 0..<outF { sb += score[1][o * r + i] }
                return score[2][i] + (sa / Float(inF) + sb / Float(outF))
            }
        }
    }

    /// Zeroes E for every rank whose score is at most the (initial − budget)-th smallest; returns which survive.
    func mask(to budget: Int) -> [[Bool]] {
        let s = scores()
        let k = initialBudget - budget
        // PEFT's kthvalue needs k ≥ 1; a budget that prunes nothing keeps every rank.
        let threshold = k >= 1 ? s.flatMap { $0 }.sorted()[min(k, initialBudget) - 1] : -Float.infinity
        let pattern = s.map { $0.map { !($0 <= threshold) } }
        for (m, keep) in zip(modules, pattern) { Self.apply(keep, to: m.update.e) }
        return pattern
    }

    static func apply(_ keep: [Bool], to e: FloatBuffer) {
        let ev = e.mutable
        for (i, k) in keep.enumerated() where !k { ev[i] = 0 }
    }

    // MARK: Checkpoints and the saved adapter

    func state() -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        for m in modules {
            for (k, s) in ["lora_A", "lora_B", "lora_E"].enumerated() {
                out.append(("sensitivity.\(m.path).\(s)", m.sensitivity[k].tensor(shape: [m.sensitivity[k].count])))
                out.append(("uncertainty.\(m.path).\(s)", m.uncertainty[k].tensor(shape: [m.uncertainty[k].count])))
            }
        }
        if let rankPattern {
            for (m, keep) in zip(modules, rankPattern) {
                out.append(("rank_pattern.\(m.path)", FloatBuffer(keep.map { $0 ? 1 : 0 }).tensor(shape: [keep.count])))
            }
        }
        return out
    }

    func restore(_ tensors: [String: FloatBuffer], source: String) throws {
        func read(_ name: String, into b: FloatBuffer) throws {
            guard let t = tensors[name] else { throw LoRAError("\(source): missing AdaLoRA state '\(name)'") }
            guard t.count == b.count else { throw LoRAError("\(source): AdaLoRA state '\(name)' has \(t.count) values, expected \(b.count)") }
            b.mutable.baseAddress!.update(from: t.values.baseAddress!, count: t.count)
        }
        for m in modules {
            for (k, s) in ["lora_A", "lora_B", "lora_E"].enumerated() {
                try read("sensitivity.\(m.path).\(s)", into: m.sensitivity[k])
                try read("uncertainty.\(m.path).\(s)", into: m.uncertainty[k])
            }
        }
        let saved = modules.map { tensors["rank_pattern.\($0.path)"] }
        if saved.allSatisfy({ $0 == nil }) { rankPattern = nil; return }
        rankPattern = try zip(modules, saved).map { m, t in
            guard let t, t.count == m.update.rank else { throw LoRAError("\(source): AdaLoRA rank pattern of '\(m.path)' is missing or misshapen") }
            return t.array.map { $0 != 0 }
        }
    }

    /// The run's total_step always; in the final adapter, `rank_pattern` (keyed as PEFT keys it: the task
    /// model's parameter path of lora_E) and each module's A, E rows and B columns of the kept ranks.
    func savedAdapter(config json: JSONValue, tensors: [(String, Tensor)], final: Bool) throws -> (config: JSONValue, tensors: [(String, Tensor)]) {
        let config = json.setting("total_step", .int(Int64(totalSteps)))
        guard final, let pattern = rankPattern else { return (config, tensors) }
        var out = tensors, keys: [(String, JSONValue)] = []
        for (m, keep) in zip(modules, pattern) {
            let kept = keep.indices.filter { keep[$0] }
            for (i, (name, t)) in out.enumerated() where name.hasSuffix("." + m.path + ".lora_A") || name.hasSuffix("." + m.path + ".lora_B")
                || name.hasSuffix("." + m.path + ".lora_E") {
                let v = FloatBuffer(t).array, isB = name.hasSuffix(".lora_B")
                if name.hasSuffix(".lora_E") {
                    let bare = String(name.dropFirst(LoRAAdapter.prefix.count))
                    keys.append((bare, .array(keep.map { .bool($0) })))
                }
                if isB {
                    let rows = t.shape[0], r = t.shape[1]
                    out[i].1 = FloatBuffer(kept.isEmpty ? [] : (0..<rows).flatMap { o in kept.map { v[o * r + $0] } }).tensor(shape: [rows, kept.count])
                } else {
                    let width = t.shape[1]
                    out[i].1 = FloatBuffer(kept.flatMap { i in (0..<width).map { v[i * width + $0] } }).tensor(shape: [kept.count, width])
                }
            }
        }
        return (config.setting("rank_pattern", .object(keys.sorted { $0.0 < $1.0 })), out)
    }
}
