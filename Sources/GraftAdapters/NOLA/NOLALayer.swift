import GraftTensor

/// NOLA on one linear layer (Koohpayegani et al. 2024, "NOLA: Compressing LoRA using Linear Combination of
/// Random Basis"; the authors' `NOLALinear`): LoRA's y += s·(x̃·Aᵀ)·Bᵀ with A = A₀ + Σᵢ αᵢ·Aᵢ and B = Σⱼ βⱼ·Bⱼ,
/// where A₀ (LoRA's Kaiming-uniform start) and the bases Aᵢ [r × in], Bⱼ [out × r] (uniform in ±1/√k) are
/// regenerated from a seed — only the coefficients α [k] and β [l] train and are stored. β starts at
/// zero, so the update starts at zero as LoRA's.
public final class NOLAUpdate: LayerUpdate, @unchecked Sendable {
    public let bases: NOLABases
    public let alpha: FloatBuffer, beta: FloatBuffer
    public let scale: Float
    public var dropout: Float
    private var gradAlpha: FloatBuffer?, gradBeta: FloatBuffer?

    public init(bases: NOLABases, alpha: FloatBuffer, beta: FloatBuffer, scale: Float, dropout: Float = 0) {
        self.bases = bases; self.alpha = alpha; self.beta = beta; self.scale = scale; self.dropout = dropout
    }

    public var method: String { "nola" }

    public func fit(module: String, inFeatures: Int, outFeatures: Int) -> String? {
        inFeatures == bases.inFeatures && outFeatures == bases.outFeatures && alpha.count == bases.countA && beta.count == bases.countB
            ? nil : "(rank \(bases.rank)) gives a [\(bases.outFeatures), \(bases.inFeatures)] update"
    }

    public var parameters: [UpdateParameter] {
        [UpdateParameter(suffix: "nola_alpha", value: alpha, gradient: gradAlpha, shape: [alpha.count], decay: false),
         UpdateParameter(suffix: "nola_beta", value: beta, gradient: gradBeta, shape: [beta.count], decay: false)]
    }

    public func makeTrainable() {
        gradAlpha = FloatBuffer(repeating: 0, count: alpha.count); gradBeta = FloatBuffer(repeating: 0, count: beta.count)
    }

    final class Saved {
        let branch: LowRankBranch.Input, t: FloatBuffer, a: FloatBuffer, b: FloatBuffer
        init(branch: LowRankBranch.Input, t: FloatBuffer, a: FloatBuffer, b: FloatBuffer) { self.branch = branch; self.t = t; self.a = a; self.b = b }
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let (a, b) = bases.compose(alpha: alpha, beta: beta)
        let r = bases.rank, inF = bases.inFeatures
        let y = base.forward(x, rows: rows)
        let (xt, input) = LowRankBranch.input(x, rows: rows, width: inF, dropout: dropout, rng: rng)
        let t = LowRankBranch.down(xt, rows: rows, a: a, rank: r, inFeatures: inF)
        LowRankBranch.up(t, rows: rows, b: b, rank: r, outFeatures: bases.outFeatures, scale: scale, into: y.mutable.baseAddress!)
        return (y, Saved(branch: input, t: t, a: a, b: b))
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        let s = saved as! Saved
        let r = bases.rank
        // LoRA's gradients of the composed A and B, then through the linear combinations: dαᵢ = ⟨dA, Aᵢ⟩, dβⱼ = ⟨dB, Bⱼ⟩.
        let dA = gradAlpha.map { _ in FloatBuffer(repeating: 0, count: s.a.count) }, dB = gradBeta.map { _ in FloatBuffer(repeating: 0, count: s.b.count) }
        let u = LowRankBranch.parameterGradients(dy, input: s.branch, t: s.t, rows: rows, a: s.a, b: s.b, rank: r, scale: scale,
                                                 gradA: dA, gradB: dB)
        if let dA, let gradAlpha { bases.accumulateCoefficients(dA, basis: bases.a, count: bases.countA, into: gradAlpha) }
        if let dB, let gradBeta { bases.accumulateCoefficients(dB, basis: bases.b, count: bases.countB, into: gradBeta) }
        guard needInput else { return nil }
        let dx = base.inputGradient(dy, rows: rows)
        LowRankBranch.addBranch(LowRankBranch.inputGradient(u, rows: rows, a: s.a, rank: r, inFeatures: bases.inFeatures, scale: scale),
                                into: dx, input: s.branch)
        return dx
    }

    /// ΔW = s·B·A [out × in].
    public func delta() -> FloatBuffer {
        let (a, b) = bases.compose(alpha: alpha, beta: beta)
        let out = FloatBuffer(count: bases.outFeatures * bases.inFeatures)
        Linalg.gemm(m: bases.outFeatures, n: bases.inFeatures, k: bases.rank, alpha: scale, a: b.values.baseAddress!, b: a.values.baseAddress!,
                    c: out.mutable.baseAddress!)
        return out
    }
}

/// One layer's random matrices, a function of (seed, module path, shapes): A₀ [r × in] Kaiming-uniform
/// (LoRA's A start, U(±1/√in)), k bases Aᵢ [r × in] and l bases Bⱼ [out × r], uniform in ±1 scaled by
/// 1/√k (1/√l), as the authors' `GenerateParams` draws them.
public struct NOLABases: @unchecked Sendable {
    public let rank: Int, inFeatures: Int, outFeatures: Int, countA: Int, countB: Int
    /// A₀, then the bases as rows: a [k × (r·in)], b [l × (out·r)].
    public let a0: FloatBuffer, a: FloatBuffer, b: FloatBuffer

    public init(seed: UInt64, module: String, rank: Int, inFeatures: Int, outFeatures: Int, countA: Int, countB: Int) {
        self.rank = rank; self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.countA = countA; self.countB = countB
        var rng = SeededRNG(seed: seed, key: "nola/" + module)
        func uniform(_ n: Int, _ bound: Float) -> FloatBuffer { FloatBuffer((0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound }) }
        a0 = uniform(rank * inFeatures, 1 / Float(inFeatures).squareRoot())
        a = uniform(countA * rank * inFeatures, 1 / Float(countA).squareRoot())
        b = uniform(countB * outFeatures * rank, 1 / Float(countB).squareRoot())
    }

    /// A = A₀ + Σ αᵢ·Aᵢ and B = Σ βⱼ·Bⱼ.
    public func compose(alpha: FloatBuffer, beta: FloatBuffer) -> (a: FloatBuffer, b: FloatBuffer) {
        let na = rank * inFeatures, nb = outFeatures * rank
        let ca = FloatBuffer(count: na), cb = FloatBuffer(count: nb)
        ca.mutable.baseAddress!.update(from: a0.values.baseAddress!, count: na)
        // [1 × k]·[k × n]: the coefficients times the bases' rows.
        Linalg.gemm(m: 1, n: na, k: countA, a: alpha.values.baseAddress!, b: a.values.baseAddress!, beta: 1, c: ca.mutable.baseAddress!)
        Linalg.gemm(m: 1, n: nb, k: countB, a: beta.values.baseAddress!, b: b.values.baseAddress!, c: cb.mutable.baseAddress!)
        return (ca, cb)
    }

    /// grad[i] += ⟨d, basisᵢ⟩ for each of `count` bases (rows of `basis`).
    func accumulateCoefficients(_ d: FloatBuffer, basis: FloatBuffer, count: Int, into grad: FloatBuffer) {
        Linalg.gemm(m: 1, n: count, k: d.count, a: d.values.baseAddress!, b: basis.values.baseAddress!, transB: true, beta: 1,
                    c: grad.mutable.baseAddress!)
    }
}
