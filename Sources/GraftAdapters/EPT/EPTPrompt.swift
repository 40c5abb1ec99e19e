import Foundation
import GraftTensor

/// EPT's prompt (Lan et al. 2025, "Efficient Prompt Tuning by Multi-Space Projection and Prompt Fusion"),
/// derived from its parameters before every pass and trained through them — forward and backward side
/// by side:
///
///     L   = c·A·B                               the low-rank update of the tokens' input embeddings
///                                               (DePT's: A [positions × r], B [r × d], c = α/√r); token j
///                                               of every sequence gets row j (`VirtualTokens.offsets`)
///     P_f = P + softmax(P·Lᵀ/√d)·L              prompt fusion: the short prompt P [m × d] attends to the
///                                               low-rank knowledge L and adds what it reads
///     g   = softmax(W_g·mean(P_f)/√d + b_g)     the gate over K spaces
///     P'  = P_f + Σₖ gₖ·(P_f·Dₖ/√d)·Uₖ          multi-space projection: K projections through r-wide
///                                               subspaces (Dₖ [d × r], Uₖ [r × d]), mixed by the gate
///
/// The 1/√d in the two products over the hidden width keeps their outputs' steps near the prompt's own
/// under one learning rate (Adam moves every element by about the rate; summed over d inputs unscaled,
/// the subspaces and the gate would move √d to d times faster than P and throw the prompt off).
///
/// P' is the prompt the model reads ahead of the tokens. At the start B = 0 and Uₖ = 0, so P' = P and
/// L = 0: the model starts as plain prompt tuning with P. The decomposition into P, A and B is DePT's
/// (Shi & Lipani 2024, its code); the fusion and projection equations are Graft's reading of EPT's
/// abstract and summaries (its method section and code were not available) — see `EPTConfig`.
public final class EPTPrompt: VirtualTokenSource, @unchecked Sendable {
    public let m: Int, d: Int, r: Int, positions: Int, spaces: Int
    /// c = α/√r.
    public let scale: Float
    /// P [m × d], A [positions × r], B [r × d], D [K × d × r], U [K × r × d], W_g [K × d], b_g [K].
    public let prompt: FloatBuffer, a: FloatBuffer, b: FloatBuffer, down: FloatBuffer, up: FloatBuffer, gateWeight: FloatBuffer, gateBias: FloatBuffer
    private var grads: [FloatBuffer]? = nil

    public init(prompt: FloatBuffer, a: FloatBuffer, b: FloatBuffer, down: FloatBuffer, up: FloatBuffer, gateWeight: FloatBuffer, gateBias: FloatBuffer,
                width d: Int, rank r: Int, spaces: Int, scale: Float) {
        self.m = prompt.count / d; self.d = d; self.r = r; self.positions = a.count / r; self.spaces = spaces; self.scale = scale
        self.prompt = prompt; self.a = a; self.b = b; self.down = down; self.up = up; self.gateWeight = gateWeight; self.gateBias = gateBias
        precondition(m * d == prompt.count && positions * r == a.count && b.count == r * d && down.count == spaces * d * r
                     && up.count == spaces * r * d && gateWeight.count == spaces * d && gateBias.count == spaces)
    }

    /// The saved names and shapes, in `parameters`' order.
    public static func names(m: Int, d: Int, r: Int, positions: Int, spaces: Int) -> [(String, [Int])] {
        [("ept.short_prompt", [m, d]), ("ept.lora_embedding_A", [positions, r]), ("ept.lora_embedding_B", [r, d]),
         ("ept.space_down", [spaces, d, r]), ("ept.space_up", [spaces, r, d]), ("ept.gate.weight", [spaces, d]), ("ept.gate.bias", [spaces])]
    }

    var tensors: [FloatBuffer] { [prompt, a, b, down, up, gateWeight, gateBias] }

    public var parameters: [UpdateParameter] {
        zip(Self.names(m: m, d: d, r: r, positions: positions, spaces: spaces), tensors).enumerated().map { i, e in
            UpdateParameter(suffix: e.0.0, value: e.1, gradient: grads?[i], shape: e.0.1, decay: e.0.0 != "ept.gate.bias")
        }
    }

    public func makeTrainable() { if grads == nil { grads = tensors.map { FloatBuffer(repeating: 0, count: $0.count) } } }

    /// What `backward` needs from the last `derive`.
    private struct Saved { let l: [Float], weights: [Float], fused: [Float], mean: [Float], gate: [Float], t: [[Float]], h: [[Float]] }
    private var saved: Saved? = nil

    /// c = αβ (row-major): m × n = (m × k)·(k × n), either operand transposed as stored.
    static func mm(_ x: [Float], _ y: [Float], m: Int, n: Int, k: Int, transX: Bool = false, transY: Bool = false, alpha: Float = 1) -> [Float] {
        var out = [Float](repeating: 0, count: m * n)
        x.withUnsafeBufferPointer { xp in y.withUnsafeBufferPointer { yp in out.withUnsafeMutableBufferPointer { op in
            Linalg.gemm(m: m, n: n, k: k, alpha: alpha, a: xp.baseAddress!, transA: transX, b: yp.baseAddress!, transB: transY, c: op.baseAddress!)
        } } }
        return out
    }

    /// Tokens for this prompt: m rows of width d, with `positions` rows of offsets.
    public func makeTokens() -> VirtualTokens {
        VirtualTokens(placement: .embeddings, count: m, width: d, values: FloatBuffer(count: m * d),
                      offsets: FloatBuffer(count: positions * d), source: self)
    }

    public func derive(into tokens: VirtualTokens) {
        let (m, d, r, s, K) = (m, d, r, positions, spaces)
        precondition(tokens.count == m && tokens.width == d && tokens.offsetRows == s, "EPT tokens of another shape")
        let p = prompt.array, av = a.array, bv = b.array, dn = down.array, upv = up.array, wg = gateWeight.array, bg = gateBias.array
        let l = Self.mm(av, bv, m: s, n: d, k: r, alpha: scale)
        // Fusion: row-softmax of P·Lᵀ/√d, then P + weights·L.
        var weights = Self.mm(p, l, m: m, n: s, k: d, transY: true, alpha: 1 / Float(d).squareRoot())
        for i in 0..<m {
            let row = i * s
            var top = -Float.infinity
            for j in 0..<s { top = max(top, weights[row + j]) }
            var sum: Float = 0
            for j in 0..<s { weights[row + j] = exp(weights[row + j] - top); sum += weights[row + j] }
            for j in 0..<s { weights[row + j] /= sum }
        }
        var fused = Self.mm(weights, l, m: m, n: d, k: s)
        for i in 0..<fused.count { fused[i] += p[i] }
        // Gate over the spaces from the fused prompt's mean row.
        var mean = [Float](repeating: 0, count: d)
        for i in 0..<m { for c in 0..<d { mean[c] += fused[i * d + c] / Float(m) } }
        let inv = 1 / Float(d).squareRoot()
        var z = (0..<K).map { k in bg[k] + inv * (0..<d).reduce(Float(0)) { $0 + wg[k * d + $1] * mean[$1] } }
        let top = z.max()!
        z = z.map { exp($0 - top) }
        let total = z.reduce(0, +), gate = z.map { $0 / total }
        var out = fused, ts: [[Float]] = [], hs: [[Float]] = []
        for k in 0..<K {
            let t = Self.mm(fused, Array(dn[(k * d * r)..<((k + 1) * d * r)]), m: m, n: r, k: d, alpha: inv)
            let h = Self.mm(t, Array(upv[(k * r * d)..<((k + 1) * r * d)]), m: m, n: d, k: r)
            for i in 0..<out.count { out[i] += gate[k] * h[i] }
            ts.append(t); hs.append(h)
        }
        tokens.values.mutable.baseAddress!.update(from: out, count: out.count)
        tokens.offsets?.mutable.baseAddress!.update(from: l, count: s * d)
        saved = Saved(l: l, weights: weights, fused: fused, mean: mean, gate: gate, t: ts, h: hs)
    }

    public func backward(_ tokens: VirtualTokens) {
        guard let grads, let sv = saved, let dOut = tokens.gradient?.array else { return }
        let (m, d, r, s, K) = (m, d, r, positions, spaces), inv = 1 / Float(d).squareRoot()
        let p = prompt.array, av = a.array, bv = b.array, dn = down.array, upv = up.array, wg = gateWeight.array
        func add(_ i: Int, _ v: [Float], at offset: Int = 0) {
            let g = grads[i].mutable
            for j in 0..<v.count { g[offset + j] += v[j] }
        }
        // Multi-space projection and gate.
        var dFused = dOut
        var dGate = [Float](repeating: 0, count: K)
        for k in 0..<K {
            for i in 0..<dOut.count { dGate[k] += dOut[i] * sv.h[k][i] }
            let dh = dOut.map { $0 * sv.gate[k] }
            add(4, Self.mm(sv.t[k], dh, m: r, n: d, k: m, transX: true), at: k * r * d)                       // dUₖ = Tₖᵀ·dHₖ
            let dt = Self.mm(dh, Array(upv[(k * r * d)..<((k + 1) * r * d)]), m: m, n: r, k: d, transY: true)  // dTₖ = dHₖ·Uₖᵀ
            add(3, Self.mm(sv.fused, dt, m: d, n: r, k: m, transX: true, alpha: inv), at: k * d * r)         // dDₖ = P_fᵀ·dTₖ/√d
            let back = Self.mm(dt, Array(dn[(k * d * r)..<((k + 1) * d * r)]), m: m, n: d, k: r, transY: true, alpha: inv)
            for i in 0..<dFused.count { dFused[i] += back[i] }
        }
        let dot = zip(sv.gate, dGate).reduce(Float(0)) { $0 + $1.0 * $1.1 }
        let dz = (0..<K).map { sv.gate[$0] * (dGate[$0] - dot) }
        add(6, dz)
        add(5, (0..<(K * d)).map { dz[$0 / d] * sv.mean[$0 % d] * inv })
        for c in 0..<d {
            let dMean = inv * (0..<K).reduce(Float(0)) { $0 + wg[$1 * d + c] * dz[$1] } / Float(m)
            for i in 0..<m { dFused[i * d + c] += dMean }
        }
        // Fusion: P_f = P + W·L, W = softmax(P·Lᵀ/√d).
        var dP = dFused
        var dL = tokens.offsetGradient?.array ?? [Float](repeating: 0, count: s * d)  // the offsets are L itself
        let dW = Self.mm(dFused, sv.l, m: m, n: s, k: d, transY: true)
        let fromF = Self.mm(sv.weights, dFused, m: s, n: d, k: m, transX: true)
        for i in 0..<dL.count { dL[i] += fromF[i] }
        var dS = [Float](repeating: 0, count: m * s)
        for i in 0..<m {
            var rowDot: Float = 0
            for j in 0..<s { rowDot += dW[i * s + j] * sv.weights[i * s + j] }
            for j in 0..<s { dS[i * s + j] = sv.weights[i * s + j] * (dW[i * s + j] - rowDot) }
        }
        let dPs = Self.mm(dS, sv.l, m: m, n: d, k: s, alpha: inv)
        for i in 0..<dP.count { dP[i] += dPs[i] }
        let dLs = Self.mm(dS, p, m: s, n: d, k: m, transX: true, alpha: inv)
        for i in 0..<dL.count { dL[i] += dLs[i] }
        add(0, dP)
        add(1, Self.mm(dL, bv, m: s, n: r, k: d, transY: true, alpha: scale))  // dA = c·dL·Bᵀ
        add(2, Self.mm(av, dL, m: r, n: d, k: s, transX: true, alpha: scale))  // dB = c·Aᵀ·dL
    }
}
