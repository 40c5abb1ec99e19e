import GraftTensor

/// AdaLoRA on one linear layer (Zhang et al. 2023; PEFT `adalora.SVDLinear`): the update in SVD form,
/// y = x·Wᵀ + b + s·(x̃·(A ⊙ E)ᵀ)·Bᵀ with A [rank × in] (right singular vectors), E [rank] (singular
/// values; a zero E entry is a pruned rank), B [out × rank] (left singular vectors) and
/// s = α / (ranknum + 1e-5), ranknum the rank the adapter was created with (PEFT keeps it when it cuts
/// the pruned ranks away, so a saved adapter scales as the trained one did). IncreLoRA uses the same
/// layer with ranks that start masked and are switched on as training goes.
public final class AdaLoRAUpdate: LayerUpdate, @unchecked Sendable {
    public let a: FloatBuffer, e: FloatBuffer, b: FloatBuffer
    public let rank: Int, inFeatures: Int, outFeatures: Int
    /// s = α / (ranknum + 1e-5); IncreLoRA changes it as its ranks grow.
    public var scale: Float
    public var dropout: Float
    private var gradA: FloatBuffer?, gradE: FloatBuffer?, gradB: FloatBuffer?
    /// When set, backward adds ∂L/∂ΔW = dyᵀ·x̃ [out × in] here (IncreLoRA's module importance).
    public var deltaGradient: FloatBuffer?

    /// `ranknum`: the rank the scaling divides by (the initial rank; `rank` may be smaller once cut, even 0).
    public init(a: FloatBuffer, e: FloatBuffer, b: FloatBuffer, rank: Int, inFeatures: Int, outFeatures: Int, alpha: Double, ranknum: Double,
                dropout: Float = 0) {
        self.a = a; self.e = e; self.b = b; self.rank = rank; self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.dropout = dropout
        scale = Float(alpha / (ranknum + 1e-5))
    }

    public var method: String { "adalora" }

    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? {
        i == inFeatures && o == outFeatures ? nil : "(rank \(rank)) gives a [\(outFeatures), \(inFeatures)] update"
    }

    public var parameters: [UpdateParameter] {
        [UpdateParameter(suffix: "lora_A", value: a, gradient: gradA, shape: [rank, inFeatures], decay: true),
         UpdateParameter(suffix: "lora_B", value: b, gradient: gradB, shape: [outFeatures, rank], decay: true),
         UpdateParameter(suffix: "lora_E", value: e, gradient: gradE, shape: [rank, 1], decay: true)]
    }

    public func makeTrainable() {
        gradA = FloatBuffer(repeating: 0, count: a.count); gradB = FloatBuffer(repeating: 0, count: b.count)
        gradE = FloatBuffer(repeating: 0, count: e.count)
    }

    /// A ⊙ E: A's rows scaled by the singular values.
    func scaledA() -> FloatBuffer { rowsTimes(a, e) }

    final class Saved {
        let branch: LowRankBranch.Input, t: FloatBuffer, ae: FloatBuffer
        init(branch: LowRankBranch.Input, t: FloatBuffer, ae: FloatBuffer) { self.branch = branch; self.t = t; self.ae = ae }
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let y = base.forward(x, rows: rows)
        guard rank > 0 else { return (y, nil) }
        let ae = scaledA()
        let (xt, input) = LowRankBranch.input(x, rows: rows, width: inFeatures, dropout: dropout, rng: rng)
        let t = LowRankBranch.down(xt, rows: rows, a: ae, rank: rank, inFeatures: inFeatures)
        LowRankBranch.up(t, rows: rows, b: b, rank: rank, outFeatures: outFeatures, scale: scale, into: y.mutable.baseAddress!)
        return (y, Saved(branch: input, t: t, ae: ae))
    }

    /// The branch's gradients as LoRA's with A ⊙ E for A; then dA = d(A ⊙ E) ⊙ E and
    /// dE_i = Σ_j d(A ⊙ E)_ij · A_ij.
    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        guard let s = saved as? Saved else { return needInput ? base.inputGradient(dy, rows: rows) : nil }
        let inF = inFeatures
        if let deltaGradient {
            let xt = s.branch.dropped
            withExtendedLifetime(xt) {
                Linalg.gemm(m: outFeatures, n: inF, k: rows, a: dy.values.baseAddress!, transA: true, b: xt.values.baseAddress!, beta: 1,
                            c: deltaGradient.mutable.baseAddress!)
            }
        }
        let gAE = gradA == nil && gradE == nil ? nil : FloatBuffer(repeating: 0, count: a.count)
        let u = LowRankBranch.parameterGradients(dy, input: s.branch, t: s.t, rows: rows, a: s.ae, b: b, rank: rank, scale: scale,
                                                 gradA: gAE, gradB: gradB)
        if let gAE {
            // (A local buffer's storage may be freed after its last use: keep it while its pointer is read.)
            withExtendedLifetime(gAE) {
                let g = gAE.values, av = a.values, ev = e.values
                for i in 0..<rank {
                    var de: Float = 0
                    for j in 0..<inF { de += g[i * inF + j] * av[i * inF + j] }
                    if let gradE { gradE.mutable[i] += de }
                    if let gradA { let ga = gradA.mutable; for j in 0..<inF { ga[i * inF + j] += g[i * inF + j] * ev[i] } }
                }
            }
        }
        guard needInput else { return nil }
        let dx = base.inputGradient(dy, rows: rows)
        let branch = LowRankBranch.inputGradient(u, rows: rows, a: s.ae, rank: rank, inFeatures: inF, scale: scale)
        LowRankBranch.addBranch(branch, into: dx, input: s.branch)
        return dx
    }

    /// ΔW = s · B · (A ⊙ E) [out × in], what PEFT's merge adds to W.
    public func delta() -> FloatBuffer {
        let out = FloatBuffer(repeating: 0, count: outFeatures * inFeatures)
        guard rank > 0 else { return out }
        let ae = scaledA()
        withExtendedLifetime(ae) {
            Linalg.gemm(m: outFeatures, n: inFeatures, k: rank, alpha: scale, a: b.values.baseAddress!, b: ae.values.baseAddress!,
                        c: out.mutable.baseAddress!)
        }
        return out
    }
}

/// Each row i of m [rows × n] times the number v[i].
func rowsTimes(_ m: FloatBuffer, _ v: FloatBuffer) -> FloatBuffer {
    let rows = v.count, n = rows == 0 ? 0 : m.count / rows
    let out = FloatBuffer(count: m.count), o = out.mutable, mv = m.values, vv = v.values
    for i in 0..<rows { for j in 0..<n { o[i * n + j] = mv[i * n + j] * vv[i] } }
    return out
}
