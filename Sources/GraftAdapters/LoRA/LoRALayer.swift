import GraftTensor

/// LoRA on one linear layer (Hu et al. 2021; PEFT `lora.Linear`): y = x·Wᵀ + b + s·(x̃·Aᵀ)·Bᵀ with
/// A [rank × in], B [out × rank], s the scaling (α/r, or α/√r with rsLoRA) and x̃ the input with LoRA
/// dropout in training. Forward and backward side by side; `LowRankBranch` holds the pieces DoRA shares.
public final class LoRAUpdate: LayerUpdate, @unchecked Sendable {
    public let a: FloatBuffer, b: FloatBuffer
    public let rank: Int
    public let scale: Float
    /// Dropout probability on the branch's input, in training only.
    public var dropout: Float
    private var gradA: FloatBuffer?, gradB: FloatBuffer?

    public init(a: FloatBuffer, b: FloatBuffer, rank: Int, scale: Float, dropout: Float = 0) {
        self.a = a; self.b = b; self.rank = rank; self.scale = scale; self.dropout = dropout
    }

    public var method: String { "lora" }
    var inFeatures: Int { a.count / rank }
    var outFeatures: Int { b.count / rank }

    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? {
        a.count == rank * i && b.count == o * rank ? nil : "(rank \(rank)) gives a [\(outFeatures), \(inFeatures)] update"
    }

    public var parameters: [UpdateParameter] {
        [UpdateParameter(suffix: "lora_A.weight", value: a, gradient: gradA, shape: [rank, inFeatures], decay: true),
         UpdateParameter(suffix: "lora_B.weight", value: b, gradient: gradB, shape: [outFeatures, rank], decay: true)]
    }

    public func makeTrainable() {
        gradA = FloatBuffer(repeating: 0, count: a.count); gradB = FloatBuffer(repeating: 0, count: b.count)
    }

    final class Saved {
        let branch: LowRankBranch.Input, t: FloatBuffer
        init(branch: LowRankBranch.Input, t: FloatBuffer) { self.branch = branch; self.t = t }
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let y = base.forward(x, rows: rows)
        let (xt, input) = LowRankBranch.input(x, rows: rows, width: inFeatures, dropout: dropout, rng: rng)
        let t = LowRankBranch.down(xt, rows: rows, a: a, rank: rank, inFeatures: inFeatures)
        LowRankBranch.up(t, rows: rows, b: b, rank: rank, outFeatures: outFeatures, scale: scale, into: y.mutable.baseAddress!)
        return (y, Saved(branch: input, t: t))
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        let s = saved as! Saved
        let u = LowRankBranch.parameterGradients(dy, input: s.branch, t: s.t, rows: rows, a: a, b: b, rank: rank, scale: scale,
                                                 gradA: gradA, gradB: gradB)
        guard needInput else { return nil }
        let dx = base.inputGradient(dy, rows: rows)
        let branch = LowRankBranch.inputGradient(u, rows: rows, a: a, rank: rank, inFeatures: inFeatures, scale: scale)
        LowRankBranch.addBranch(branch, into: dx, input: s.branch)
        return dx
    }
}

/// The low-rank branch x̃ → s·(x̃·Aᵀ)·Bᵀ that LoRA and its variants share, forward and backward.
public enum LowRankBranch {
    /// The branch's input x̃: x, or x with dropout. Backward keeps x and the per-element dropout scale
    /// (0 or 1/(1−p)) and forms x̃ again, rather than holding a third activation per layer.
    public struct Input {
        /// The layer's input.
        public let x: FloatBuffer
        public let dropScale: FloatBuffer?

        /// x̃ = x ⊙ the dropout scale.
        public var dropped: FloatBuffer {
            guard let dropScale else { return x }
            let d = FloatBuffer(count: dropScale.count), dv = d.mutable, xv = x.values, sv = dropScale.values
            for i in 0..<dv.count { dv[i] = xv[i] * sv[i] }
            return d
        }
    }

    /// x̃ for the branch, and what backward keeps: dropout draws one uniform per element in order from
    /// `rng` (none without it or at p = 0).
    public static func input(_ x: FloatBuffer, rows: Int, width: Int, dropout p: Float, rng: UnsafeMutablePointer<SeededRNG>?)
        -> (dropped: FloatBuffer, input: Input) {
        guard p > 0, let rng else { return (x, Input(x: x, dropScale: nil)) }
        let n = rows * width, keep = 1 - p, s = FloatBuffer(count: n), d = FloatBuffer(count: n)
        let sv = s.mutable, dv = d.mutable, xv = x.values
        for i in 0..<n {
            let m: Float = rng.pointee.nextUnitFloat() < p ? 0 : 1 / keep
            sv[i] = m; dv[i] = xv[i] * m
        }
        return (d, Input(x: x, dropScale: s))
    }

    /// A routed mixture of LoRA experts (Arrow, PHATGOOSE): y += Σₑ w[row, e]·sₑ·(x·Aₑᵀ)·Bₑᵀ with w [rows ×
    /// experts]; an expert no row routes to costs nothing.
    public static func addMixture(_ experts: [LoRAUpdate], weights w: [Float], x: FloatBuffer, rows: Int, inFeatures: Int, into y: FloatBuffer) {
        let n = experts.count
        for (e, l) in experts.enumerated() {
            guard (0..<rows).contains(where: { w[$0 * n + e] != 0 }) else { continue }
            let t = down(x, rows: rows, a: l.a, rank: l.rank, inFeatures: inFeatures)
            let tv = t.mutable
            for r in 0..<rows { let s = w[r * n + e]; for j in 0..<l.rank { tv[r * l.rank + j] *= s } }
            up(t, rows: rows, b: l.b, rank: l.rank, outFeatures: l.b.count / l.rank, scale: l.scale, into: y.mutable.baseAddress!)
        }
    }

    /// t = x̃·Aᵀ [rows × rank].
    public static func down(_ xt: FloatBuffer, rows: Int, a: FloatBuffer, rank: Int, inFeatures: Int) -> FloatBuffer {
        let t = FloatBuffer(count: rows * rank)
        Linalg.gemm(m: rows, n: rank, k: inFeatures, a: xt.values.baseAddress!, b: a.values.baseAddress!, transB: true, c: t.mutable.baseAddress!)
        return t
    }

    /// y += s·t·Bᵀ.
    public static func up(_ t: FloatBuffer, rows: Int, b: FloatBuffer, rank: Int, outFeatures: Int, scale: Float, into y: UnsafeMutablePointer<Float>) {
        Linalg.gemm(m: rows, n: outFeatures, k: rank, alpha: scale, a: t.values.baseAddress!, b: b.values.baseAddress!, transB: true, beta: 1, c: y)
    }

    /// From dL/d(branch output) `dyBranch`: gB += s·dyᵀ·t, gA += s·uᵀ·x̃ (when they train); returns u = dy·B [rows × rank].
    public static func parameterGradients(_ dyBranch: FloatBuffer, input: Input, t: FloatBuffer, rows: Int, a: FloatBuffer, b: FloatBuffer,
                                          rank: Int, scale: Float, gradA: FloatBuffer?, gradB: FloatBuffer?) -> FloatBuffer {
        let inF = a.count / rank, outF = b.count / rank
        if let gradB {
            Linalg.gemm(m: outF, n: rank, k: rows, alpha: scale, a: dyBranch.values.baseAddress!, transA: true,
                        b: t.values.baseAddress!, beta: 1, c: gradB.mutable.baseAddress!)
        }
        let u = FloatBuffer(count: rows * rank)
        Linalg.gemm(m: rows, n: rank, k: outF, a: dyBranch.values.baseAddress!, b: b.values.baseAddress!, c: u.mutable.baseAddress!)
        if let gradA {
            // x̃ must outlive the product that reads it through a pointer (a temporary would not).
            let xt = input.dropped
            withExtendedLifetime(xt) {
                Linalg.gemm(m: rank, n: inF, k: rows, alpha: scale, a: u.values.baseAddress!, transA: true,
                            b: xt.values.baseAddress!, beta: 1, c: gradA.mutable.baseAddress!)
            }
        }
        return u
    }

    /// s·u·A [rows × in]: the branch's gradient with respect to x̃.
    public static func inputGradient(_ u: FloatBuffer, rows: Int, a: FloatBuffer, rank: Int, inFeatures: Int, scale: Float) -> FloatBuffer {
        let g = FloatBuffer(count: rows * inFeatures)
        Linalg.gemm(m: rows, n: inFeatures, k: rank, alpha: scale, a: u.values.baseAddress!, b: a.values.baseAddress!, c: g.mutable.baseAddress!)
        return g
    }

    /// dx += the branch's input gradient, through the dropout mask when there was one.
    public static func addBranch(_ branch: FloatBuffer, into dx: FloatBuffer, input: Input) {
        let dxp = dx.mutable, bp = branch.values
        if let scale = input.dropScale {
            let sv = scale.values
            for i in 0..<dxp.count { dxp[i] += bp[i] * sv[i] }
        } else {
            for i in 0..<dxp.count { dxp[i] += bp[i] }
        }
    }
}
