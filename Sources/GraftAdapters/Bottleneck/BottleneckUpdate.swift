import Foundation
import GraftTensor

/// A bottleneck adapter at one sublayer site (Houlsby et al. 2019; Pfeiffer et al. 2021; He et al.
/// 2022 for the parallel form), as AdapterHub `adapters` 1.3 computes it:
/// f(x) = s·(W_up·act(W_down·x + b_down) + b_up), W_down [m × hidden], W_up [hidden × m], and the term
/// added to h + r (h the sublayer's output, r its residual input) is f of
/// - h (serial, Houlsby's `DoubleSeqBnConfig`),
/// - the sublayer's own norm of h + r (serial, Pfeiffer's `SeqBnConfig`, `original_ln_before`; h + r for Llama),
/// - r (parallel, `ParBnConfig`, s = 4).
public final class BottleneckUpdate: SublayerUpdate, @unchecked Sendable {
    public enum Input: String, Sendable { case output, normedSum, residual }
    public enum Activation: String, Sendable { case relu, swish }

    public let down: FloatBuffer, downBias: FloatBuffer, up: FloatBuffer, upBias: FloatBuffer
    public let hidden: Int, bottleneck: Int
    public let input: Input, activation: Activation, scaling: Float
    private var grads: [FloatBuffer]?

    public init(down: FloatBuffer, downBias: FloatBuffer, up: FloatBuffer, upBias: FloatBuffer, hidden: Int, bottleneck: Int,
                input: Input, activation: Activation, scaling: Float) {
        self.down = down; self.downBias = downBias; self.up = up; self.upBias = upBias; self.hidden = hidden; self.bottleneck = bottleneck
        self.input = input; self.activation = activation; self.scaling = scaling
    }

    public var method: String { "bottleneck" }

    /// AdapterHub's tensor names after `…adapters.NAME.`.
    public static let suffixes = ["adapter_down.0.weight", "adapter_down.0.bias", "adapter_up.weight", "adapter_up.bias"]

    public var parameters: [UpdateParameter] {
        let values = [down, downBias, up, upBias], shapes = [[bottleneck, hidden], [bottleneck], [hidden, bottleneck], [hidden]]
        return (0..<4).map { UpdateParameter(suffix: Self.suffixes[$0], value: values[$0], gradient: grads?[$0], shape: shapes[$0], decay: $0 % 2 == 0) }
    }

    public func makeTrainable() { grads = [down, downBias, up, upBias].map { FloatBuffer(repeating: 0, count: $0.count) } }

    final class Saved {
        let x: FloatBuffer, z: FloatBuffer, a: FloatBuffer, norm: AnyObject?
        init(x: FloatBuffer, z: FloatBuffer, a: FloatBuffer, norm: AnyObject?) { self.x = x; self.z = z; self.a = a; self.norm = norm }
    }

    /// y [rows × n] = x [rows × k]·Wᵀ (W [n × k]) + bias.
    static func affine(_ x: FloatBuffer, rows: Int, weight w: FloatBuffer, bias: FloatBuffer, n: Int, k: Int) -> FloatBuffer {
        let y = FloatBuffer(count: rows * n), yv = y.mutable, bv = bias.values
        for r in 0..<rows { for j in 0..<n { yv[r * n + j] = bv[j] } }
        Linalg.gemm(m: rows, n: n, k: k, a: x.values.baseAddress!, b: w.values.baseAddress!, transB: true, beta: 1, c: yv.baseAddress!)
        return y
    }

    public func forward(h: FloatBuffer, residual r: FloatBuffer, rows: Int, norm: FrozenNorm?, keep: Bool) -> (term: FloatBuffer, saved: AnyObject?) {
        let x: FloatBuffer, normSaved: AnyObject?
        switch input {
        case .output: x = FloatBuffer(h.array); normSaved = nil
        case .residual: x = FloatBuffer(r.array); normSaved = nil
        case .normedSum:
            let sum = FloatBuffer(h.array), sv = sum.mutable, rv = r.values
            for i in 0..<sv.count { sv[i] += rv[i] }
            if let norm { let (y, s) = norm.forward(sum, rows: rows); x = y; normSaved = s } else { x = sum; normSaved = nil }
        }
        let z = Self.affine(x, rows: rows, weight: down, bias: downBias, n: bottleneck, k: hidden)
        let a = FloatBuffer(count: z.count), av = a.mutable, zv = z.values
        switch activation {
        case .relu: for i in 0..<zv.count { av[i] = max(zv[i], 0) }
        case .swish: for i in 0..<zv.count { av[i] = zv[i] / (1 + exp(-zv[i])) }
        }
        let o = Self.affine(a, rows: rows, weight: up, bias: upBias, n: hidden, k: bottleneck)
        if scaling != 1 { let ov = o.mutable; for i in 0..<ov.count { ov[i] *= scaling } }
        return (o, keep ? Saved(x: x, z: z, a: a, norm: normSaved) : nil)
    }

    public func backward(_ dTerm: FloatBuffer, saved: AnyObject?, rows: Int, norm: FrozenNorm?) -> (dh: FloatBuffer?, dr: FloatBuffer?) {
        let s = saved as! Saved, m = bottleneck, n = hidden
        let dOut = FloatBuffer(dTerm.array.map { $0 * scaling })
        let da = FloatBuffer(count: rows * m)
        withExtendedLifetime(dOut) {
            if let g = grads {
                Linalg.gemm(m: n, n: m, k: rows, a: dOut.values.baseAddress!, transA: true, b: s.a.values.baseAddress!, beta: 1, c: g[2].mutable.baseAddress!)
                let gb = g[3].mutable, dv = dOut.values
                for r in 0..<rows { for j in 0..<n { gb[j] += dv[r * n + j] } }
            }
            Linalg.gemm(m: rows, n: m, k: n, a: dOut.values.baseAddress!, b: up.values.baseAddress!, c: da.mutable.baseAddress!)
        }
        // Through the activation.
        let dz = da.mutable, zv = s.z.values
        switch activation {
        case .relu: for i in 0..<dz.count where zv[i] <= 0 { dz[i] = 0 }
        case .swish:
            for i in 0..<dz.count { let sig = 1 / (1 + exp(-zv[i])); dz[i] *= sig * (1 + zv[i] * (1 - sig)) }
        }
        if let g = grads {
            Linalg.gemm(m: m, n: n, k: rows, a: da.values.baseAddress!, transA: true, b: s.x.values.baseAddress!, beta: 1, c: g[0].mutable.baseAddress!)
            let gb = g[1].mutable, dv = da.values
            for r in 0..<rows { for j in 0..<m { gb[j] += dv[r * m + j] } }
        }
        let dx = FloatBuffer(count: rows * n)
        Linalg.gemm(m: rows, n: n, k: m, a: da.values.baseAddress!, b: down.values.baseAddress!, c: dx.mutable.baseAddress!)
        switch input {
        case .output: return (dx, nil)
        case .residual: return (nil, dx)
        case .normedSum:
            let d = norm.map { $0.backward(dx, saved: s.norm!, rows: rows) } ?? dx
            return (d, d)
        }
    }
}
