import GraftTensor

/// ALLoRA on one linear layer (Huang & Balestriero 2024, "ALLoRA: Adaptive Learning Rate Mitigates LoRA
/// Fatal Flaws"): LoRA without dropout and without a scaling factor, y = x·Wᵀ + b + (x·Aᵀ)·Bᵀ, whose
/// parameter gradients are scaled per output row i of ΔW = B·A by
///
///     cᵢ = 1 / √(‖(B·A)ᵢ‖ + 1/η²)
///
/// — η at the start (B = 0: a larger step to leave zero), falling as the row grows. The gradient that
/// reaches A and B is that of ΔW with its row i multiplied by cᵢ: dy's column i scaled by cᵢ before
/// both products; the input gradient passed down is not scaled. cᵢ is computed from the current A and B
/// at every backward pass (held constant, not differentiated).
///
/// The rule's form (the plain row norm under the root, both A and B scaled, the input gradient left
/// alone) follows the public reimplementations that quote the paper's section 4.2; only the abstract
/// was available here. The paper's "per sample" scaling is applied to the batch's summed gradient
/// (the same thing: cᵢ depends on the weights only). Under AdamW a constant scale of a gradient cancels
/// in m/√v, so what acts is cᵢ's change over the run: a row's steps shrink as it grows, relative to
/// the gradients Adam remembers.
public final class ALLoRAUpdate: LayerUpdate, @unchecked Sendable {
    /// The LoRA it trains (scale 1, no dropout).
    public let lora: LoRAUpdate
    public let eta: Float

    public init(lora: LoRAUpdate, eta: Float) { self.lora = lora; self.eta = eta }

    public var method: String { "allora" }
    public func fit(module: String, inFeatures: Int, outFeatures: Int) -> String? { lora.fit(module: module, inFeatures: inFeatures, outFeatures: outFeatures) }
    public var parameters: [UpdateParameter] { lora.parameters }
    public func makeTrainable() { lora.makeTrainable() }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        lora.forward(x, rows: rows, base: base, rng: nil)
    }

    /// cᵢ for each output row: ‖(B·A)ᵢ‖² = Bᵢ·(A·Aᵀ)·Bᵢᵀ, through the rank × rank Gram matrix of A.
    public func rowScales() -> [Float] {
        let r = lora.rank, inF = lora.inFeatures, outF = lora.outFeatures
        let gram = FloatBuffer(count: r * r)
        Linalg.gemm(m: r, n: r, k: inF, a: lora.a.values.baseAddress!, b: lora.a.values.baseAddress!, transB: true, c: gram.mutable.baseAddress!)
        let g = gram.values, b = lora.b.values, floor = 1 / (eta * eta)
        return (0..<outF).map { i in
            var sq: Float = 0
            for j in 0..<r {
                var row: Float = 0
                for k in 0..<r { row += g[j * r + k] * b[i * r + k] }
                sq += b[i * r + j] * row
            }
            return 1 / (max(sq, 0).squareRoot() + floor).squareRoot()
        }
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        let outF = lora.outFeatures, c = rowScales()
        let scaled = FloatBuffer(count: dy.count), sv = scaled.mutable, dv = dy.values
        for t in 0..<rows { for i in 0..<outF { sv[t * outF + i] = dv[t * outF + i] * c[i] } }
        _ = lora.backward(scaled, x: x, saved: saved, rows: rows, base: base, needInput: false)
        guard needInput else { return nil }
        // The layer's input gradient, unscaled: W's and the branch's (dy·B)·A.
        let r = lora.rank, dx = base.inputGradient(dy, rows: rows)
        let u = FloatBuffer(count: rows * r)
        Linalg.gemm(m: rows, n: r, k: outF, a: dy.values.baseAddress!, b: lora.b.values.baseAddress!, c: u.mutable.baseAddress!)
        let branch = LowRankBranch.inputGradient(u, rows: rows, a: lora.a, rank: r, inFeatures: lora.inFeatures, scale: 1)
        let dp = dx.mutable, bp = branch.values
        for j in 0..<dp.count { dp[j] += bp[j] }
        return dx
    }
}
