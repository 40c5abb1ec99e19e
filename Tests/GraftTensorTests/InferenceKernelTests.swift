import Foundation
import XCTest
@testable import GraftTensor

/// The float32 inference kernels (packed products with their fused epilogue, per-head attention)
/// against straightforward double-precision loops.
final class InferenceKernelTests: XCTestCase {
    func gelu(_ x: Double) -> Double { 0.5 * x * (1 + erf(x / 2.0.squareRoot())) }

    /// Every shape class, for the classical and (k and n even) the Strassen kernel: one row, fewer rows
    /// than a micro-tile, a partial 64-column panel, k across the 1536-wide blocks (so the epilogue runs
    /// only after the last block), both layouts of B, and each of bias, residual and GELU on and off.
    /// Strassen's cases also cover blocks of 2 × 48 rows and a last block with an odd row count (its
    /// bottom half one row short), blocks small enough to be multiplied classically from the Strassen
    /// operands, and k/2 across the 1536-wide blocks — split by rows, and again split by columns in the
    /// classical order from the operands (the path for few rows).
    func testPackedProductMatchesDoubleReference() {
        var rng = SeededRNG(seed: 11)
        for (m, k, n) in [(1, 1, 1), (5, 7, 3), (1, 2, 2), (5, 8, 4), (13, 38, 70), (100, 300, 130), (7, 1700, 64),
                          (64, 1537, 200), (203, 64, 258), (97, 3074, 130)] {
            let a = (0..<(m * k)).map { _ in rng.nextUnitFloat() * 2 - 1 }
            let b = (0..<(k * n)).map { _ in rng.nextUnitFloat() * 2 - 1 }
            let bt = (0..<(n * k)).map { i in b[(i % k) * n + i / k] }  // [n × k]
            let bias = (0..<n).map { _ in rng.nextUnitFloat() - 0.5 }
            let res = (0..<(m * n)).map { _ in rng.nextUnitFloat() - 0.5 }
            // Strassen twice: split by rows (its seven products) and by columns (the classical order from
            // its operands, as for few rows).
            let runs: [(F32Matrix.Algorithm, columnSplitBelow: Int)] =
                k % 2 == 0 && n % 2 == 0 ? [(.classical, 0), (.strassen, 0), (.strassen, Int.max)] : [(.classical, 0)]
            for (algorithm, columnSplitBelow) in runs {
            for (transposed, useBias, useRes, act) in [(false, false, false, F32Matrix.Activation.none), (true, true, false, .gelu),
                                                      (false, true, true, .none), (true, false, true, .gelu)] {
                let mat = (transposed ? bt : b).withUnsafeBufferPointer {
                    F32Matrix($0.baseAddress!, k: k, n: n, transposed: transposed, algorithm: algorithm)
                }
                mat.columnSplitBelow = columnSplitBelow
                var c = [Float](repeating: .nan, count: m * n)
                a.withUnsafeBufferPointer { ap in bias.withUnsafeBufferPointer { bp in res.withUnsafeBufferPointer { rp in
                    c.withUnsafeMutableBufferPointer { cp in
                        mat.multiply(ap.baseAddress!, m: m, into: cp.baseAddress!, bias: useBias ? bp.baseAddress! : nil,
                                     residual: useRes ? rp.baseAddress! : nil, activation: act)
                    }
                } } }
                var worst = 0.0
                for i in 0..<m {
                    for j in 0..<n {
                        var s = 0.0, mag = 0.0
                        for l in 0..<k { let p = Double(a[i * k + l]) * Double(b[l * n + j]); s += p; mag += abs(p) }
                        if useBias { s += Double(bias[j]); mag += abs(Double(bias[j])) }
                        if useRes { s += Double(res[i * n + j]); mag += abs(Double(res[i * n + j])) }
                        if act == .gelu { s = gelu(s) }
                        let e = abs(Double(c[i * n + j]) - s) / max(mag, 1)
                        if !(e <= worst) { worst = e }  // an unwritten output (NaN) fails the test
                    }
                }
                XCTAssertLessThan(worst, 2e-6, "\(algorithm) (column split below \(columnSplitBelow) rows) m \(m) k \(k) n \(n) transposed \(transposed) bias \(useBias) residual \(useRes) \(act)")
            }
            }
        }
    }

    /// `automatic` takes Strassen only where it was measured to pay (k and n even and ≥ 384) and only
    /// when the CPU's kernel choices say it is faster there.
    func testAutomaticAlgorithmChoice() {
        let saved = KernelChoices.active
        defer { KernelChoices.apply(saved) }
        let b = [Float](repeating: 0.5, count: 1536 * 1536)
        b.withUnsafeBufferPointer { p in
            for strassen in [true, false] {
                var choices = saved
                choices.strassen = strassen
                KernelChoices.apply(choices)
                let paying: F32Matrix.Algorithm = strassen ? .strassen : .classical
                XCTAssertEqual(F32Matrix(p.baseAddress!, k: 384, n: 1536, transposed: true).algorithm, paying)
                XCTAssertEqual(F32Matrix(p.baseAddress!, k: 1536, n: 384, transposed: true).algorithm, paying)
                XCTAssertEqual(F32Matrix(p.baseAddress!, k: 384, n: 383, transposed: true).algorithm, .classical)
                XCTAssertEqual(F32Matrix(p.baseAddress!, k: 192, n: 384, transposed: true).algorithm, .classical)
            }
        }
    }

    /// The products give the same values to rounding whatever k block the tuning picks (here every
    /// candidate, with k spanning several blocks), and `measure` returns a complete, valid choice.
    func testKernelChoicesBlockSizesAndMeasurement() {
        let saved = KernelChoices.active
        defer { KernelChoices.apply(saved) }
        let (m, k, n) = (13, 1000, 130)
        var rng = SeededRNG(seed: 5)
        let a = (0..<(m * k)).map { _ in rng.nextUnitFloat() - 0.5 }, b = (0..<(k * n)).map { _ in rng.nextUnitFloat() - 0.5 }
        var reference = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for q in 0..<k { reference[i * n + j] += Double(a[i * k + q]) * Double(b[q * n + j]) } } }
        for kc in [192, 384, 768, 1536] {
            var choices = saved
            choices.f32BlockK = kc
            KernelChoices.apply(choices)
            let mat = b.withUnsafeBufferPointer { F32Matrix($0.baseAddress!, k: k, n: n, transposed: false, algorithm: .classical) }
            var c = [Float](repeating: .nan, count: m * n)
            a.withUnsafeBufferPointer { ap in c.withUnsafeMutableBufferPointer { mat.multiply(ap.baseAddress!, m: m, into: $0.baseAddress!) } }
            var worst = 0.0
            for (x, r) in zip(c, reference) { let d = abs(Double(x) - r); worst = d.isNaN ? .infinity : max(worst, d) }
            XCTAssertLessThan(worst, 1e-4, "k block \(kc)")
        }
        let (measured, timings) = KernelChoices.measure()
        XCTAssertTrue([192, 384, 768, 1536].contains(measured.f32BlockK))
        XCTAssertFalse(measured.bf16 && !BF16Matrix.hardwareAccelerated, "bf16 chosen without AVX512-BF16")
        XCTAssertGreaterThanOrEqual(timings.count, 5)
        XCTAssertTrue(timings.allSatisfy { $0.gflops.isFinite && $0.gflops > 0 }, "\(timings)")
    }

    /// Softmax(scale·QKᵀ)·V for one head whose rows sit inside wider [tokens × hidden] matrices:
    /// lengths around the 4-row blocks, 16-key vectors and the 64 keys whose softmax runs in registers,
    /// head sizes below, at and above 16 and 32 (the Kᵀ transpose in 16 × 16 blocks, partial ones masked).
    func testAttentionHeadMatchesDoubleReference() {
        var rng = SeededRNG(seed: 12)
        for (len, dh) in [(1, 8), (5, 32), (17, 40), (63, 20), (64, 32), (64, 33), (77, 64), (130, 16)] {
            let stride = dh * 3 + 5, outStride = dh + 3
            let q = (0..<(len * stride)).map { _ in rng.nextUnitFloat() * 4 - 2 }
            let k = (0..<(len * stride)).map { _ in rng.nextUnitFloat() * 4 - 2 }
            let v = (0..<(len * stride)).map { _ in rng.nextUnitFloat() * 2 - 1 }
            let scale = 1 / Float(dh).squareRoot()
            var out = [Float](repeating: .nan, count: len * outStride)
            var scratch = [Float](repeating: .nan, count: Kernels.attentionScratchCount(length: len, headSize: dh))
            q.withUnsafeBufferPointer { qp in k.withUnsafeBufferPointer { kp in v.withUnsafeBufferPointer { vp in
                out.withUnsafeMutableBufferPointer { op in scratch.withUnsafeMutableBufferPointer { sp in
                    Kernels.attentionHead(length: len, headSize: dh, q: qp.baseAddress!, k: kp.baseAddress!, v: vp.baseAddress!,
                                          stride: stride, scale: scale, out: op.baseAddress!, outStride: outStride, scratch: sp.baseAddress!)
                } }
            } } }
            var worst = 0.0
            for i in 0..<len {
                var s = (0..<len).map { j in (0..<dh).reduce(0.0) { $0 + Double(q[i * stride + $1]) * Double(k[j * stride + $1]) } * Double(scale) }
                let mx = s.max()!
                s = s.map { exp($0 - mx) }
                let sum = s.reduce(0, +)
                for d in 0..<dh {
                    let want = (0..<len).reduce(0.0) { $0 + s[$1] / sum * Double(v[$1 * stride + d]) }
                    let e = abs(Double(out[i * outStride + d]) - want)
                    if !(e <= worst) { worst = e }  // NaN (unwritten) fails
                }
                for d in dh..<outStride { XCTAssertTrue(out[i * outStride + d].isNaN, "wrote outside the head's columns") }
            }
            XCTAssertLessThan(worst, 1e-5, "length \(len) head size \(dh)")
        }
    }
}
