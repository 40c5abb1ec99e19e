import Foundation
import GraftTensor

/// PHATGOOSE routing among gated LoRA adapters, per token and per module, as the reference code computes
/// it (r-three/phatgoose `Router` with `score_type="original"`, `FFNExperts` with `topk_value=2`,
/// `normalize_topk=True`): the module's input x and every expert's gate vector vₑ are standardised over
/// their width (a LayerNorm without affine parameters, ε 1e-5), scored sₑ = LN(x)·LN(vₑ)/√d, turned into
/// probabilities by a softmax over all experts, and the `topK` largest renormalised to sum to one (with
/// the reference's +1e-6 in the denominator); y = base(x) + Σₑ pₑ·sₑ·(x·Aₑᵀ)·Bₑᵀ. The sigmoid gate is not
/// applied at inference.
public struct PhatgooseSettings: Sendable, Equatable {
    /// Experts mixed per token (the paper's 2).
    public var topK = 2
    public init() {}
}

public enum PhatgooseRouting {
    /// One `PhatgooseUpdate` per module any expert adapts, routing among the experts that adapt it. Every
    /// expert must be plain LoRA with a gate for each of its modules (`graft gate` trains them).
    public static func updates(experts: [(name: String, updates: [String: any LayerUpdate], gates: [String: FloatBuffer])],
                               settings: PhatgooseSettings) throws -> [String: any LayerUpdate] {
        guard experts.count >= 2 else { throw LoRAError("PHATGOOSE routing needs at least two gated LoRA adapters (have \(experts.count))") }
        guard settings.topK >= 1 else { throw LoRAError("PHATGOOSE routing needs top-k ≥ 1") }
        var byModule: [String: [(lora: LoRAUpdate, gate: FloatBuffer)]] = [:]
        for e in experts {
            for (module, u) in e.updates.sorted(by: { $0.key < $1.key }) {
                guard let l = u as? LoRAUpdate, type(of: u) == LoRAUpdate.self else {
                    throw LoRAError("PHATGOOSE routes among plain LoRA adapters; '\(e.name)' is \(u.method)")
                }
                guard let g = e.gates[module] else {
                    throw LoRAError("'\(e.name)' has no PHATGOOSE gate for '\(module)' (train its gates with graft gate)")
                }
                let inF = l.a.count / l.rank
                guard g.count == inF else { throw LoRAError("'\(e.name)': the gate of '\(module)' has \(g.count) entries for \(inF) inputs") }
                byModule[module, default: []].append((l, g))
            }
        }
        return byModule.mapValues { PhatgooseUpdate(experts: $0.map(\.lora), gates: $0.map(\.gate), settings: settings) }
    }

    static let epsilon: Float = 1e-5

    /// x standardised over its width: (x − mean)/√(var + ε), the variance the biased one (LayerNorm's).
    static func standardise(_ x: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Float>) {
        var mean = 0.0
        for k in 0..<n { mean += Double(x[k]) }
        mean /= Double(n)
        var variance = 0.0
        for k in 0..<n { let d = Double(x[k]) - mean; variance += d * d }
        variance /= Double(n)
        let inv = 1 / (variance + Double(epsilon)).squareRoot()
        for k in 0..<n { out[k] = Float((Double(x[k]) - mean) * inv) }
    }
}

/// PHATGOOSE's routed mixture of LoRA experts on one linear layer (inference only).
public final class PhatgooseUpdate: LayerUpdate, @unchecked Sendable {
    public let experts: [LoRAUpdate]
    public let settings: PhatgooseSettings
    /// [experts × in]: each gate standardised and divided by √in, so that a standardised x times it is the score.
    let routers: FloatBuffer
    let inFeatures: Int

    init(experts: [LoRAUpdate], gates: [FloatBuffer], settings: PhatgooseSettings) {
        self.experts = experts; self.settings = settings
        let n = experts[0].a.count / experts[0].rank
        inFeatures = n
        let r = FloatBuffer(count: experts.count * n), rv = r.mutable
        for (e, g) in gates.enumerated() {
            withExtendedLifetime(g) { PhatgooseRouting.standardise(g.values.baseAddress!, count: n, into: rv.baseAddress! + e * n) }
            let s = 1 / Float(n).squareRoot()
            for k in 0..<n { rv[e * n + k] *= s }
        }
        routers = r
    }

    public var method: String { "phatgoose" }

    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? {
        for e in experts { if let why = e.fit(module: module, inFeatures: i, outFeatures: o) { return why } }
        return nil
    }

    public var parameters: [UpdateParameter] { [] }
    public func makeTrainable() {}

    /// Each expert's weight for each row [rows × experts].
    func weights(_ x: FloatBuffer, rows: Int) -> [Float] {
        let n = experts.count, k = min(settings.topK, n)
        let xs = FloatBuffer(count: rows * inFeatures)
        withExtendedLifetime(x) {
            for r in 0..<rows {
                PhatgooseRouting.standardise(x.values.baseAddress! + r * inFeatures, count: inFeatures, into: xs.mutable.baseAddress! + r * inFeatures)
            }
        }
        let scores = FloatBuffer(count: rows * n)
        Linalg.gemm(m: rows, n: n, k: inFeatures, a: xs.values.baseAddress!, b: routers.values.baseAddress!, transB: true, c: scores.mutable.baseAddress!)
        var w = [Float](repeating: 0, count: rows * n)
        withExtendedLifetime(scores) {
            let s = scores.values
            for r in 0..<rows {
                let row = (0..<n).map { Double(s[r * n + $0]) }
                let m = row.max()!
                let e = row.map { exp($0 - m) }
                let z = e.reduce(0, +)
                let p = e.map { $0 / z }
                let kept = p.indices.sorted { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }.prefix(k)
                let total = kept.reduce(0) { $0 + p[$1] } + 1e-6
                for idx in kept { w[r * n + idx] = Float(p[idx] / total) }
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
        preconditionFailure("PHATGOOSE routing is for inference")
    }
}
