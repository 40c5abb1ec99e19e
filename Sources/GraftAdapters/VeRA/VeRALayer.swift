import GraftTensor

/// VeRA on one linear layer (Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation"; PEFT
/// `vera.Linear`): frozen random projections A [r × in] and B [out × r], shared by every layer (each
/// layer uses the leading columns of A and rows of B), and two trained vectors per layer,
/// y = x·Wᵀ + b + λ_b ⊙ ((λ_d ⊙ (x̃·Aᵀ))·Bᵀ), x̃ the input with dropout in training.
public final class VeRAUpdate: LayerUpdate, @unchecked Sendable {
    /// The shared projections: A [rank × maxIn] and B [maxOut × rank], as PEFT stores them. `inFeatures`
    /// starts at A's full width when not given.
    public let sharedA: FloatBuffer, sharedB: FloatBuffer
    public let rank: Int, outFeatures: Int
    /// The layer's input width: the leading columns of A it uses (set when attached, `fit`).
    public private(set) var inFeatures: Int
    /// λ_b [out] (PEFT starts it at zeros) and λ_d [rank] (at d_initial).
    public let lambdaB: FloatBuffer, lambdaD: FloatBuffer
    public var dropout: Float
    private var gradB: FloatBuffer?, gradD: FloatBuffer?

    public init(sharedA: FloatBuffer, sharedB: FloatBuffer, rank: Int, inFeatures: Int? = nil, outFeatures: Int,
                lambdaB: FloatBuffer, lambdaD: FloatBuffer, dropout: Float = 0) {
        self.sharedA = sharedA; self.sharedB = sharedB; self.rank = rank; self.inFeatures = inFeatures ?? sharedA.count / rank
        self.outFeatures = outFeatures
        self.lambdaB = lambdaB; self.lambdaD = lambdaD; self.dropout = dropout
    }

    public var method: String { "vera" }
    /// A's row stride (the widest layer's input).
    var maxIn: Int { sharedA.count / rank }

    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? {
        guard o == outFeatures, lambdaB.count == o, lambdaD.count == rank, maxIn >= i, sharedB.count / rank >= o else {
            return "gives a [\(outFeatures), ≤ \(maxIn)] update"
        }
        inFeatures = i
        return nil
    }

    public var parameters: [UpdateParameter] {
        [UpdateParameter(suffix: "vera_lambda_b", value: lambdaB, gradient: gradB, shape: [outFeatures], decay: true),
         UpdateParameter(suffix: "vera_lambda_d", value: lambdaD, gradient: gradD, shape: [rank], decay: true)]
    }

    public func makeTrainable() {
        gradB = FloatBuffer(repeating: 0, count: lambdaB.count); gradD = FloatBuffer(repeating: 0, count: lambdaD.count)
    }

    final class Saved {
        let branch: LowRankBranch.Input
        /// t = x̃·Aᵀ [rows × r] and v = (λ_d ⊙ t)·Bᵀ [rows × out].
        let t: FloatBuffer, v: FloatBuffer
        init(branch: LowRankBranch.Input, t: FloatBuffer, v: FloatBuffer) { self.branch = branch; self.t = t; self.v = v }
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let y = base.forward(x, rows: rows)
        let (xt, input) = LowRankBranch.input(x, rows: rows, width: inFeatures, dropout: dropout, rng: rng)
        let t = FloatBuffer(count: rows * rank), v = FloatBuffer(count: rows * outFeatures), a = slicedA
        // t = x̃·A[:, :in]ᵀ; v = (λ_d ⊙ t)·B[:out, :]ᵀ; y += λ_b ⊙ v. At VeRA's ranks (256 and more) these are
        // large products: split over the cores like the frozen ones.
        Linalg.gemmParallel(m: rows, n: rank, k: inFeatures, a: xt.values.baseAddress!, b: a.values.baseAddress!, transB: true,
                            c: t.mutable.baseAddress!)
        let td = scaledRows(t, rows: rows, by: lambdaD)
        Linalg.gemmParallel(m: rows, n: outFeatures, k: rank, a: td.values.baseAddress!, b: sharedB.values.baseAddress!, transB: true,
                            c: v.mutable.baseAddress!)
        let yv = y.mutable, vv = v.values, lb = lambdaB.values
        for r in 0..<rows { for j in 0..<outFeatures { yv[r * outFeatures + j] += lb[j] * vv[r * outFeatures + j] } }
        return (y, Saved(branch: input, t: t, v: v))
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        let s = saved as! Saved
        let outF = outFeatures, dyv = dy.values
        if let gradB {
            let g = gradB.mutable, vv = s.v.values
            for r in 0..<rows { for j in 0..<outF { g[j] += dyv[r * outF + j] * vv[r * outF + j] } }
        }
        // g = dy ⊙ λ_b; ds = g·B[:out, :] [rows × r]; dλ_d = Σ ds ⊙ t; dt = ds ⊙ λ_d; dx̃ = dt·A[:, :in].
        let g = scaledRows(dy, rows: rows, by: lambdaB)
        let ds = FloatBuffer(count: rows * rank)
        Linalg.gemmParallel(m: rows, n: rank, k: outF, a: g.values.baseAddress!, b: sharedB.values.baseAddress!, c: ds.mutable.baseAddress!)
        if let gradD {
            let gd = gradD.mutable, dsv = ds.values, tv = s.t.values
            for r in 0..<rows { for k in 0..<rank { gd[k] += dsv[r * rank + k] * tv[r * rank + k] } }
        }
        guard needInput else { return nil }
        let dx = base.inputGradient(dy, rows: rows)
        let dt = scaledRows(ds, rows: rows, by: lambdaD)
        let branch = FloatBuffer(count: rows * inFeatures), a = slicedA
        Linalg.gemmParallel(m: rows, n: inFeatures, k: rank, a: dt.values.baseAddress!, b: a.values.baseAddress!, c: branch.mutable.baseAddress!)
        LowRankBranch.addBranch(branch, into: dx, input: s.branch)
        return dx
    }

    /// A[:, :in] [rank × in]: A itself when the layer is the widest, else its leading columns copied.
    /// (B[:out, :] is B's leading rows, contiguous as it is.)
    var slicedA: FloatBuffer {
        guard inFeatures < maxIn else { return sharedA }
        let out = FloatBuffer(count: rank * inFeatures), o = out.mutable.baseAddress!, a = sharedA.values.baseAddress!
        for k in 0..<rank { (o + k * inFeatures).update(from: a + k * maxIn, count: inFeatures) }
        return out
    }

    /// ΔW = (λ_b ⊙ B[:out, :])·(λ_d ⊙ A[:, :in]) [out × in], PEFT's `get_delta_weight`.
    public func delta() -> FloatBuffer {
        let bs = FloatBuffer(count: outFeatures * rank), ad = FloatBuffer(count: rank * inFeatures)
        let bv = bs.mutable, av = ad.mutable, sb = sharedB.values, sa = sharedA.values, lb = lambdaB.values, ld = lambdaD.values
        for j in 0..<outFeatures { for k in 0..<rank { bv[j * rank + k] = lb[j] * sb[j * rank + k] } }
        for k in 0..<rank { for i in 0..<inFeatures { av[k * inFeatures + i] = ld[k] * sa[k * maxIn + i] } }
        let out = FloatBuffer(count: outFeatures * inFeatures)
        Linalg.gemm(m: outFeatures, n: inFeatures, k: rank, a: bs.values.baseAddress!, b: ad.values.baseAddress!, c: out.mutable.baseAddress!)
        return out
    }
}
