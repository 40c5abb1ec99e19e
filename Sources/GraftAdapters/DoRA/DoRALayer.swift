import GraftTensor

/// DoRA on one linear layer (Liu et al. 2024; PEFT's LoRA with `use_dora`): the weight split into a
/// magnitude m [out] and a direction, y = m/‖W + s·B·A‖ ⊙ (x̃·Wᵀ + s·(x̃·Aᵀ)·Bᵀ) + (x − x̃)·Wᵀ + b, the
/// row norms treated as constants in the backward pass (DoRA §4.3, as PEFT does). Without dropout
/// x̃ = x, and then — as PEFT does — the frozen product is reused and one product with W serves the input
/// gradient. The low-rank branch is LoRA's (`LowRankBranch`).
public final class DoRAUpdate: LayerUpdate, @unchecked Sendable {
    public let a: FloatBuffer, b: FloatBuffer, magnitude: FloatBuffer
    public let rank: Int
    public let scale: Float
    /// Dropout probability on the branch's input, in training only.
    public var dropout: Float
    private var gradA: FloatBuffer?, gradB: FloatBuffer?, gradMagnitude: FloatBuffer?

    public init(a: FloatBuffer, b: FloatBuffer, magnitude: FloatBuffer, rank: Int, scale: Float, dropout: Float = 0) {
        self.a = a; self.b = b; self.magnitude = magnitude; self.rank = rank; self.scale = scale; self.dropout = dropout
    }

    /// PEFT's initial magnitude: the row norms ‖W_j‖ of the frozen weight (B starts at zero).
    public static func initialMagnitude(_ w: FloatBuffer, inFeatures: Int, outFeatures: Int) -> FloatBuffer {
        let wv = w.values
        return FloatBuffer((0..<outFeatures).map { j in
            var ss: Float = 0
            for i in 0..<inFeatures { ss += wv[j * inFeatures + i] * wv[j * inFeatures + i] }
            return ss.squareRoot()
        })
    }

    public var method: String { "dora" }
    var inFeatures: Int { a.count / rank }
    var outFeatures: Int { b.count / rank }

    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? {
        a.count == rank * i && b.count == o * rank && magnitude.count == o ? nil : "(rank \(rank)) gives a [\(outFeatures), \(inFeatures)] update"
    }

    public var parameters: [UpdateParameter] {
        [UpdateParameter(suffix: "lora_A.weight", value: a, gradient: gradA, shape: [rank, inFeatures], decay: true),
         UpdateParameter(suffix: "lora_B.weight", value: b, gradient: gradB, shape: [outFeatures, rank], decay: true),
         UpdateParameter(suffix: "lora_magnitude_vector", value: magnitude, gradient: gradMagnitude, shape: [outFeatures], decay: false)]
    }

    public func makeTrainable() {
        gradA = FloatBuffer(repeating: 0, count: a.count); gradB = FloatBuffer(repeating: 0, count: b.count)
        gradMagnitude = FloatBuffer(repeating: 0, count: magnitude.count)
    }

    final class Saved {
        let branch: LowRankBranch.Input, t: FloatBuffer
        /// g = m/‖W + s·B·A‖ [out] and pre = x̃·Wᵀ + s·t·Bᵀ [rows × out].
        let g: FloatBuffer, pre: FloatBuffer
        init(branch: LowRankBranch.Input, t: FloatBuffer, g: FloatBuffer, pre: FloatBuffer) {
            self.branch = branch; self.t = t; self.g = g; self.pre = pre
        }
    }

    /// g = m / ‖W + s·B·A‖ per output row (norms of the current weights; constants for backward).
    func directionScale(_ weight: FloatBuffer) -> FloatBuffer {
        let outF = outFeatures, inF = inFeatures
        let w = FloatBuffer(count: outF * inF)
        w.mutable.baseAddress!.update(from: weight.values.baseAddress!, count: w.count)
        Linalg.gemm(m: outF, n: inF, k: rank, alpha: scale, a: b.values.baseAddress!, b: a.values.baseAddress!, beta: 1, c: w.mutable.baseAddress!)
        let g = FloatBuffer(count: outF), wv = w.values
        for j in 0..<outF {
            var ss: Float = 0
            for i in 0..<inF { let v = wv[j * inF + i]; ss += v * v }
            g.mutable[j] = magnitude[j] / ss.squareRoot()
        }
        return g
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let outF = outFeatures, inF = inFeatures
        let y = base.forward(x, rows: rows)
        let yp = y.mutable.baseAddress!
        let (xt, input) = LowRankBranch.input(x, rows: rows, width: inF, dropout: dropout, rng: rng)
        let t = LowRankBranch.down(xt, rows: rows, a: a, rank: rank, inFeatures: inF)
        // pre = x̃·Wᵀ + s·t·Bᵀ; y = (x·Wᵀ + b) − x̃·Wᵀ + g ⊙ pre.
        let g = directionScale(base.weight)
        let xw = FloatBuffer(count: rows * outF)
        if input.dropScale == nil {
            // Without dropout x̃·Wᵀ is the frozen product already made, less the bias (as PEFT reuses it).
            let xv = xw.mutable, bias = base.bias?.values
            for r in 0..<rows { for j in 0..<outF { xv[r * outF + j] = yp[r * outF + j] - (bias?[j] ?? 0) } }
        } else {
            Linalg.gemmParallel(m: rows, n: outF, k: inF, a: xt.values.baseAddress!, b: base.weight.values.baseAddress!, transB: true,
                                c: xw.mutable.baseAddress!)
        }
        let pre = FloatBuffer(count: rows * outF)
        let pp = pre.mutable.baseAddress!
        pp.update(from: xw.values.baseAddress!, count: pre.count)
        LowRankBranch.up(t, rows: rows, b: b, rank: rank, outFeatures: outF, scale: scale, into: pp)
        let gv = g.values
        for r in 0..<rows {
            for j in 0..<outF { let i = r * outF + j; yp[i] += gv[j] * pp[i] - xw[i] }
        }
        return (y, Saved(branch: input, t: t, g: g, pre: pre))
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        let s = saved as! Saved
        let outF = outFeatures
        // The gradient reaching the low-rank branch's output is g ⊙ dy; ∂y/∂m_j = pre_j/‖·‖_j = pre_j·g_j/m_j.
        let scaled = FloatBuffer(count: rows * outF)
        let sv = scaled.mutable, gv = s.g.values, pv = s.pre.values, dyv = dy.values
        let dm = gradMagnitude?.mutable
        for r in 0..<rows {
            for j in 0..<outF {
                let d = dyv[r * outF + j]
                sv[r * outF + j] = d * gv[j]
                if let dm { dm[j] += d * pv[r * outF + j] * gv[j] / magnitude[j] }
            }
        }
        let u = LowRankBranch.parameterGradients(scaled, input: s.branch, t: s.t, rows: rows, a: a, b: b, rank: rank, scale: scale,
                                                 gradA: gradA, gradB: gradB)
        guard needInput else { return nil }
        let branch = LowRankBranch.inputGradient(u, rows: rows, a: a, rank: rank, inFeatures: inFeatures, scale: scale)
        if s.branch.dropScale == nil {
            // x̃ = x: the frozen path and the direction's share one product, (g ⊙ dy)·W, plus s·u·A.
            let dx = base.inputGradient(scaled, rows: rows)
            LowRankBranch.addBranch(branch, into: dx, input: s.branch)
            return dx
        }
        let dx = base.inputGradient(dy, rows: rows)
        // The branch's input gradient: s·u·A + ((g − 1) ⊙ dy)·W, through the dropout mask.
        let d1 = FloatBuffer(count: rows * outF), dv = d1.mutable
        for r in 0..<rows { for j in 0..<outF { dv[r * outF + j] = dyv[r * outF + j] * (gv[j] - 1) } }
        Linalg.gemmParallel(m: rows, n: inFeatures, k: outF, a: d1.values.baseAddress!, b: base.weight.values.baseAddress!, beta: 1,
                            c: branch.mutable.baseAddress!)
        LowRankBranch.addBranch(branch, into: dx, input: s.branch)
        return dx
    }
}
