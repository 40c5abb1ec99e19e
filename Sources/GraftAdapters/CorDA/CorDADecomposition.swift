import Foundation
import GraftTensor

/// What CorDA needs from each targeted layer before training: the covariance of its inputs over a few
/// task examples, as PEFT's `preprocess_corda` collects it — one forward call per example (batch of
/// one, no padding), C = (1/calls)·Σ XᵀX / max(X)², X [tokens × in] a call's input and max(X) its
/// largest element (signed, then its magnitude). A pass-through update: the layer's output is unchanged.
public final class CovarianceProbe: LayerUpdate, @unchecked Sendable {
    public let inFeatures: Int
    /// Σ XᵀX / max(X)², in double precision.
    public private(set) var sum: [Double]
    public private(set) var calls = 0

    public init(inFeatures: Int) { self.inFeatures = inFeatures; sum = [Double](repeating: 0, count: inFeatures * inFeatures) }

    public var method: String { "corda-probe" }
    public func fit(module: String, inFeatures i: Int, outFeatures o: Int) -> String? { i == inFeatures ? nil : "covariance of \(inFeatures) inputs" }
    public var parameters: [UpdateParameter] { [] }
    public func makeTrainable() {}

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        let n = inFeatures, xv = x.values
        let peak = Double(abs((0..<(rows * n)).reduce(-Float.infinity) { max($0, xv[$1]) }))
        let scale = peak > 0 ? 1 / peak : 0
        // (X/|max X|)ᵀ·(X/|max X|), accumulated in double precision.
        let x64 = (0..<(rows * n)).map { Double(xv[$0]) * scale }
        let xt = (0..<(n * rows)).map { x64[($0 % rows) * n + $0 / rows] }
        let product = Linalg.matmul64(xt, x64, m: n, k: rows, n: n)
        for i in 0..<sum.count { sum[i] += product[i] }
        calls += 1
        return (base.forward(x, rows: rows), nil)
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        needInput ? base.inputGradient(dy, rows: rows) : nil
    }

    /// C, the mean over the calls.
    public var covariance: [Double] { calls == 0 ? sum : sum.map { $0 / Double(calls) } }
}

/// CorDA's decomposition of one layer (Yang et al. 2024; PEFT `corda.py` `collect_eigens_for_layer` and
/// `LoraLayer.corda_init`), in double precision where PEFT uses float32: C̃ = C + d·mean(diag C)·I, d
/// from 1 % doubled until ‖C̃·C̃⁻¹ − I‖_F < 0.05; W·C̃ = U·S·Vhᵀ; V = (Vh·C̃⁻¹)ᵀ; the r largest
/// components (instruction-previewed, `ipm`) or the r smallest (knowledge-preserved, `kpm`); S ← S / s
/// (s the LoRA scaling); A = √S·Vᵀ [r × in], B = U·√S [out × r]. Then s·B·A is the part of W those
/// components carry, and PEFT's residual base weight is W − s·B·A.
public enum CorDADecomposition {
    public enum Mode: String, Sendable, CaseIterable { case ipm, kpm }

    public struct Result {
        public let a: [Float], b: [Float]
        /// The kept singular values of W·C̃ (before the division by the scaling).
        public let singularValues: [Double]
        public let damp: Double
    }

    /// `weight` W [out × in] (row-major, as PyTorch stores it), `covariance` C [in × in].
    public static func decompose(weight: FloatBuffer, outFeatures: Int, inFeatures n: Int, covariance c: [Double], rank r: Int,
                                 scaling: Double, mode: Mode) throws -> Result {
        guard r <= min(outFeatures, n) else { throw LoRAError("CorDA rank \(r) exceeds the layer's [\(outFeatures), \(n)] shape") }
        let meanDiag = (0..<n).reduce(0.0) { $0 + c[$1 * n + $1] } / Double(n)
        var damp = 0.01, fixed = c, inverse: [Double] = []
        for _ in 0..<60 {
            fixed = c
            for i in 0..<n { fixed[i * n + i] += meanDiag * damp }
            inverse = try Linalg.inverse64(fixed, n: n)
            // ‖C̃·C̃⁻¹ − I‖_F
            let product = Linalg.matmul64(fixed, inverse, m: n, k: n, n: n)
            var err = 0.0
            for i in 0..<n { for j in 0..<n { let v = product[i * n + j] - (i == j ? 1 : 0); err += v * v } }
            if err.squareRoot() < 0.05 { break }
            damp *= 2
        }
        let wc = Linalg.matmul64(weight.array.map(Double.init), fixed, m: outFeatures, k: n, n: n)  // W·C̃
        let (u, s, vh) = try Linalg.svd64(wc, rows: outFeatures, cols: n)
        let full = s.count
        let kept = mode == .ipm ? Array(0..<r) : Array((full - r)..<full)
        // Rows of (Vh·C̃⁻¹) for the kept components.
        let vhKept = kept.flatMap { comp in vh[(comp * n)..<((comp + 1) * n)] }
        let v = Linalg.matmul64(vhKept, inverse, m: r, k: n, n: n)
        var a = [Float](repeating: 0, count: r * n), b = [Float](repeating: 0, count: outFeatures * r)
        for (i, comp) in kept.enumerated() {
            let root = (s[comp] / scaling).squareRoot()
            for j in 0..<n { a[i * n + j] = Float(v[i * n + j] * root) }
            for o in 0..<outFeatures { b[o * r + i] = Float(u[o * full + comp] * root) }
        }
        return Result(a: a, b: b, singularValues: kept.map { s[$0] }, damp: damp)
    }
}
