import Foundation
import GraftTensor

/// Arrow routing among LoRA adapters (Ostapenko et al. 2024, "Towards Modular LLMs by Building and
/// Reusing a Library of LoRAs"), as PEFT's `arrow` LoRA variant (`ArrowConfig`, PEFT ≥ 0.18) computes it:
/// training-free, per token and per layer. Each adapter ("expert") gets, for every module it adapts, a
/// prototype: the top right singular vector of its ΔW = B·A. A token's input x to that layer scores each
/// expert by |x·prototype| (x is not normalised, as in PEFT), keeps the `topK` best, and weights them by
/// a softmax of score / `temperature`; the layer gives y = base(x) + Σₑ wₑ·sₑ·(x·Aₑᵀ)·Bₑᵀ.
public struct ArrowSettings: Sendable, Equatable {
    /// Experts mixed per token (PEFT's default 3; fewer experts than this: all of them).
    public var topK = 3
    /// Softmax temperature over the kept experts' scores (PEFT's default 1).
    public var temperature: Float = 1
    public init() {}
}

public enum ArrowRouting {
    /// Whether an adapter's updates are plain LoRA (what Arrow routes among; DoRA, IA³, … are left out).
    public static func isPlainLoRA(_ updates: [String: any LayerUpdate]) -> Bool {
        !updates.isEmpty && updates.values.allSatisfy { type(of: $0) == LoRAUpdate.self }
    }

    /// One `ArrowUpdate` per module that every adapter adapts, from each adapter's LoRA updates (by module
    /// path). Only plain LoRA experts of one rank on the same modules can be routed, as in PEFT; anything
    /// else is an error naming the adapter.
    public static func updates(experts: [(name: String, updates: [String: any LayerUpdate])], settings: ArrowSettings) throws -> [String: any LayerUpdate] {
        guard experts.count >= 2 else { throw LoRAError("Arrow routing needs at least two LoRA adapters (have \(experts.count))") }
        guard settings.topK >= 1, settings.temperature > 0 else { throw LoRAError("Arrow routing needs top-k ≥ 1 and a temperature > 0") }
        let modules = Set(experts[0].updates.keys)
        var rank: Int?
        for e in experts {
            guard Set(e.updates.keys) == modules else {
                throw LoRAError("Arrow routing needs every adapter on the same modules: '\(e.name)' adapts \(e.updates.count) modules, '\(experts[0].name)' \(modules.count)")
            }
            for u in e.updates.values {
                guard let l = u as? LoRAUpdate, type(of: u) == LoRAUpdate.self else {
                    throw LoRAError("Arrow routing mixes plain LoRA adapters; '\(e.name)' is \(u.method)")
                }
                if rank == nil { rank = l.rank }
                guard l.rank == rank else { throw LoRAError("Arrow routing needs one rank for every adapter: '\(e.name)' has r = \(l.rank), another \(rank!)") }
            }
        }
        var out: [String: any LayerUpdate] = [:]
        for m in modules {
            out[m] = ArrowUpdate(experts: experts.map { $0.updates[m] as! LoRAUpdate }, settings: settings)
        }
        return out
    }

    /// The unit top right singular vector of B·A (A [r × in], B [out × r]) without forming it: power
    /// iteration v ← Aᵀ(BᵀB(A·v)) in double precision from a fixed start, run until it stops moving
    /// (PEFT runs 15 steps from a random start; the converged vector is the same up to sign, which the
    /// routing's |·| ignores).
    static func prototype(a: FloatBuffer, b: FloatBuffer, rank r: Int) -> [Float] {
        let inF = a.count / r, outF = b.count / r
        let av = a.values, bv = b.values
        var btb = [Double](repeating: 0, count: r * r)  // BᵀB
        for i in 0..<r { for j in 0..<r { var s = 0.0; for o in 0..<outF { s += Double(bv[o * r + i]) * Double(bv[o * r + j]) }; btb[i * r + j] = s } }
        var rng = SeededRNG(seed: 0x41_72_72_6F_77)
        var v = (0..<inF).map { _ in Double(rng.nextUnitFloat()) - 0.5 }
        func normalise(_ x: inout [Double]) { let n = max(x.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-300); for i in x.indices { x[i] /= n } }
        normalise(&v)
        for _ in 0..<1000 {
            var t = [Double](repeating: 0, count: r)  // A·v
            for i in 0..<r { var s = 0.0; for k in 0..<inF { s += Double(av[i * inF + k]) * v[k] }; t[i] = s }
            var u = [Double](repeating: 0, count: r)  // BᵀB·t
            for i in 0..<r { var s = 0.0; for j in 0..<r { s += btb[i * r + j] * t[j] }; u[i] = s }
            var w = [Double](repeating: 0, count: inF)  // Aᵀ·u
            for i in 0..<r { let ui = u[i]; for k in 0..<inF { w[k] += Double(av[i * inF + k]) * ui } }
            normalise(&w)
            // Converged when the direction no longer changes (either sign).
            let dot = zip(w, v).reduce(0) { $0 + $1.0 * $1.1 }
            v = w
            if 1 - abs(dot) < 1e-14 { break }
        }
        return v.map(Float.init)
    }
}

/// Arrow's routed mixture of LoRA experts on one linear layer (inference only).
public final class ArrowUpdate: LayerUpdate, @unchecked Sendable {
    public let experts: [LoRAUpdate]
    public let settings: ArrowSettings
    /// [experts × in], row e the unit prototype of expert e.
    let prototypes: FloatBuffer
    let inFeatures: Int

    init(experts: [LoRAUpdate], settings: ArrowSettings) {
        self.experts = experts; self.settings = settings
        inFeatures = experts[0].a.count / experts[0].rank
        prototypes = FloatBuffer(experts.flatMap { ArrowRouting.prototype(a: $0.a, b: $0.b, rank: $0.rank) })
    }

    public var method: String { "arrow" }

    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? {
        for e in experts { if let why = e.fit(module: module, inFeatures: i, outFeatures: o) { return why } }
        return nil
    }

    public var parameters: [UpdateParameter] { [] }
    public func makeTrainable() {}

    /// Each expert's weight for each row [rows × experts]: softmax over the top-k |x·prototype| / T.
    func weights(_ x: FloatBuffer, rows: Int) -> [Float] {
        let n = experts.count, k = min(settings.topK, n)
        let scores = FloatBuffer(count: rows * n)
        Linalg.gemm(m: rows, n: n, k: inFeatures, a: x.values.baseAddress!, b: prototypes.values.baseAddress!, transB: true, c: scores.mutable.baseAddress!)
        var w = [Float](repeating: 0, count: rows * n)
        withExtendedLifetime(scores) {
        let s = scores.values
        for r in 0..<rows {
            let row = (0..<n).map { abs(s[r * n + $0]) }
            let kept = row.indices.sorted { row[$0] > row[$1] }.prefix(k)
            let m = kept.map { row[$0] }.max()!
            let e = kept.map { exp(Double((row[$0] - m) / settings.temperature)) }
            let z = e.reduce(0, +)
            for (j, idx) in kept.enumerated() { w[r * n + idx] = Float(e[j] / z) }
        }
        }
        return w
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let y = base.forward(x, rows: rows)
        LowRankBranch.addMixture(experts, weights: weights(x, rows: rows), x: x, rows: rows, inFeatures: inFeatures, into: y)
        return (y, nil)
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        preconditionFailure("Arrow routing is for inference")
    }
}
