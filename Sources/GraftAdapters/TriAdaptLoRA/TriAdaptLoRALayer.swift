import GraftTensor

/// TriAdaptLoRA on one linear layer (Liang et al. 2025): y = x·Wᵀ + b + s·((x̃·Aᵀ)·Cᵀ)·Bᵀ with A [cap × in],
/// B [out × cap] and C = L + U [cap × cap], L lower- and U upper-triangular (both with the diagonal),
/// s = α / (rank + 1e-5). Ranks past `rank` are zero rows of A, columns of B and rows and columns of
/// L and U, so they add nothing and get no gradient until the growth schedule draws them.
public final class TriAdaptLoRAUpdate: LayerUpdate, @unchecked Sendable {
    public let a: FloatBuffer, b: FloatBuffer, lower: FloatBuffer, upper: FloatBuffer
    /// Rows held (the rank bound); `scale` follows the ranks in use.
    public let capacity: Int, inFeatures: Int, outFeatures: Int
    public var scale: Float
    public var dropout: Float
    private var gradA: FloatBuffer?, gradB: FloatBuffer?, gradL: FloatBuffer?, gradU: FloatBuffer?

    public init(a: FloatBuffer, b: FloatBuffer, lower: FloatBuffer, upper: FloatBuffer, capacity: Int, inFeatures: Int, outFeatures: Int,
                scale: Float, dropout: Float = 0) {
        self.a = a; self.b = b; self.lower = lower; self.upper = upper; self.capacity = capacity
        self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.scale = scale; self.dropout = dropout
    }

    public var method: String { "triadaptlora" }

    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? {
        i == inFeatures && o == outFeatures ? nil : "(rank bound \(capacity)) gives a [\(outFeatures), \(inFeatures)] update"
    }

    public var parameters: [UpdateParameter] {
        [UpdateParameter(suffix: "lora_A", value: a, gradient: gradA, shape: [capacity, inFeatures], decay: true),
         UpdateParameter(suffix: "lora_B", value: b, gradient: gradB, shape: [outFeatures, capacity], decay: true),
         UpdateParameter(suffix: "lora_C_lower", value: lower, gradient: gradL, shape: [capacity, capacity], decay: true),
         UpdateParameter(suffix: "lora_C_upper", value: upper, gradient: gradU, shape: [capacity, capacity], decay: true)]
    }

    public func makeTrainable() {
        gradA = FloatBuffer(repeating: 0, count: a.count); gradB = FloatBuffer(repeating: 0, count: b.count)
        gradL = FloatBuffer(repeating: 0, count: lower.count); gradU = FloatBuffer(repeating: 0, count: upper.count)
    }

    /// C = L + U.
    public func core() -> FloatBuffer {
        let c = FloatBuffer(count: capacity * capacity), cv = c.mutable, lv = lower.values, uv = upper.values
        for i in 0..<cv.count { cv[i] = lv[i] + uv[i] }
        return c
    }

    final class Saved {
        let branch: LowRankBranch.Input, t: FloatBuffer, t2: FloatBuffer, c: FloatBuffer
        init(branch: LowRankBranch.Input, t: FloatBuffer, t2: FloatBuffer, c: FloatBuffer) { self.branch = branch; self.t = t; self.t2 = t2; self.c = c }
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let y = base.forward(x, rows: rows), r = capacity
        let (xt, input) = LowRankBranch.input(x, rows: rows, width: inFeatures, dropout: dropout, rng: rng)
        let t = LowRankBranch.down(xt, rows: rows, a: a, rank: r, inFeatures: inFeatures)
        let c = core(), t2 = FloatBuffer(count: rows * r)
        Linalg.gemm(m: rows, n: r, k: r, a: t.values.baseAddress!, b: c.values.baseAddress!, transB: true, c: t2.mutable.baseAddress!)
        LowRankBranch.up(t2, rows: rows, b: b, rank: r, outFeatures: outFeatures, scale: scale, into: y.mutable.baseAddress!)
        return (y, Saved(branch: input, t: t, t2: t2, c: c))
    }

    /// With u = dy·B: dB = s·dyᵀ·(t·Cᵀ), dC = s·uᵀ·t (dL its lower, dU its upper triangle), v = u·C,
    /// dA = s·vᵀ·x̃, dx = dy·W + s·v·A.
    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        let s = saved as! Saved, r = capacity
        // u = dy·B, and dB from t2 (LowRankBranch's LoRA gradients with t2 for t; its dA is not ours).
        let u = LowRankBranch.parameterGradients(dy, input: s.branch, t: s.t2, rows: rows, a: a, b: b, rank: r, scale: scale,
                                                 gradA: nil, gradB: gradB)
        if gradL != nil || gradU != nil {
            let gc = FloatBuffer(repeating: 0, count: r * r)
            Linalg.gemm(m: r, n: r, k: rows, alpha: scale, a: u.values.baseAddress!, transA: true, b: s.t.values.baseAddress!,
                        c: gc.mutable.baseAddress!)
            let g = gc.array
            if let gradL { let gl = gradL.mutable; for i in 0..<r { for j in 0...i { gl[i * r + j] += g[i * r + j] } } }
            if let gradU { let gu = gradU.mutable; for i in 0..<r { for j in i..<r { gu[i * r + j] += g[i * r + j] } } }
        }
        let v = FloatBuffer(count: rows * r)
        Linalg.gemm(m: rows, n: r, k: r, a: u.values.baseAddress!, b: s.c.values.baseAddress!, c: v.mutable.baseAddress!)
        if let gradA {
            let xt = s.branch.dropped
            withExtendedLifetime(xt) {
                Linalg.gemm(m: r, n: inFeatures, k: rows, alpha: scale, a: v.values.baseAddress!, transA: true,
                            b: xt.values.baseAddress!, beta: 1, c: gradA.mutable.baseAddress!)
            }
        }
        guard needInput else { return nil }
        let dx = base.inputGradient(dy, rows: rows)
        let branch = LowRankBranch.inputGradient(v, rows: rows, a: a, rank: r, inFeatures: inFeatures, scale: scale)
        LowRankBranch.addBranch(branch, into: dx, input: s.branch)
        return dx
    }

    /// The first `rank` ranks as A' = C·A [rank × in] and B [out × rank]: ΔW = s·B·A'.
    public func folded(rank k: Int) -> (a: [Float], b: [Float]) {
        let r = capacity, c = core().array, av = a.values, bv = b.values
        var af = [Float](repeating: 0, count: k * inFeatures)
        for i in 0..<k { for j in 0..<k where c[i * r + j] != 0 { let cij = c[i * r + j]; for n in 0..<inFeatures { af[i * inFeatures + n] += cij * av[j * inFeatures + n] } } }
        let bf = (0..<outFeatures).flatMap { o in (0..<k).map { bv[o * r + $0] } }
        return (af, bf)
    }
}
