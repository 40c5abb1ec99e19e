import XCTest
@testable import GraftTensor

final class ConversionTests: XCTestCase {
    func testFloat16RoundTripIsExactForRepresentableValues() {
        let values: [Float] = [0, 1, -2.5, 65504, 6.1035156e-05, 0.333251953125, -0.0]
        let t = Tensor(shape: [values.count], values: values, dtype: .f16)
        XCTAssertEqual(t.byteCount, values.count * 2)
        XCTAssertEqual(t.floats(), values)
    }

    func testBFloat16RoundsToNearestEven() {
        // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to the even one, 1.
        XCTAssertEqual(Convert.bf16Bits(1 + 1.0 / 256), 0x3F80)
        // 1 + 3·2^-8 is a tie between 1 + 2^-7 (odd mantissa) and 1 + 2^-6 (even): rounds up.
        XCTAssertEqual(Convert.bf16Bits(1 + 3.0 / 256), 0x3F82)
        XCTAssertEqual(Convert.bf16Bits(-2), 0xC000)
        XCTAssertTrue(Float(bitPattern: UInt32(Convert.bf16Bits(.nan)) << 16).isNaN)
        let values: [Float] = (0..<1000).map { Float($0) * 0.37 - 100 }
        let back = Tensor(shape: [1000], values: values, dtype: .bf16).floats()
        for (a, b) in zip(values, back) { XCTAssertEqual(a, b, accuracy: abs(a) / 128 + 1e-30) }
    }

    func testFloatBufferSharesAlignedF32AndConvertsOthers() {
        let t = Tensor(shape: [4], values: [1, 2, 3, 4])
        let b = FloatBuffer(t)
        XCTAssertTrue(b.storage === t.storage)
        let h = FloatBuffer(t.converted(to: .f16))
        XCTAssertEqual(h.array, [1, 2, 3, 4])
        XCTAssertEqual(FloatBuffer([1, .infinity, 3]).firstNonFinite(), 1)
        XCTAssertNil(FloatBuffer([Float](repeating: 1, count: 100)).firstNonFinite())
        var many = [Float](repeating: 0, count: 100); many[77] = .nan
        XCTAssertEqual(FloatBuffer(many).firstNonFinite(), 77)
    }
}

final class SelectionTests: XCTestCase {
    func testTopKMatchesSortingIncludingTies() {
        var rng = SeededRNG(seed: 7)
        for n in [1, 5, 64, 1000, 70_000] {
            // Few distinct values, so ties at the threshold are common.
            let v: [Float] = (0..<n).map { _ in Float(Int(rng.next() % 50)) - 25 }
            for k in [0, 1, n / 3, n - 1, n] {
                let t = v.withUnsafeBufferPointer { Selection.topKMagnitude($0, minus: nil, k: k) }
                let chosen = (0..<n).filter { t.contains(magnitudeBits: abs(v[$0]).bitPattern, index: $0) }
                XCTAssertEqual(chosen.count, k, "n=\(n) k=\(k)")
                // Stable order by descending magnitude, ties by index.
                let expected = (0..<n).sorted { (abs(v[$0]), -$0) > (abs(v[$1]), -$1) }.prefix(k).sorted()
                XCTAssertEqual(chosen, Array(expected), "n=\(n) k=\(k)")
            }
        }
    }

    func testQuantileMatchesSortedPosition() {
        var rng = SeededRNG(seed: 3)
        let v: [Float] = (0..<5000).map { _ in rng.nextUnitFloat() * 10 - 5 }
        let sorted = v.sorted()
        for q in [0, 1, 2500, 4998, 4999] {
            XCTAssertEqual(v.withUnsafeBufferPointer { Selection.quantile($0, position: q) }, sorted[q])
        }
    }
}

final class LinalgTests: XCTestCase {
    func testSVDReconstructsAndIsOrthonormal() throws {
        var rng = SeededRNG(seed: 11)
        for (m, n) in [(7, 4), (4, 7), (16, 16)] {
            let a: [Float] = (0..<(m * n)).map { _ in rng.nextUnitFloat() - 0.5 }
            let (u, s, vt) = try Linalg.svd(a, rows: m, cols: n)
            let r = min(m, n)
            XCTAssertEqual(s, s.sorted(by: >))
            var us = u
            for i in 0..<m { for j in 0..<r { us[i * r + j] *= s[j] } }
            let back = Linalg.matmul(us, vt, m: m, k: r, n: n)
            for (x, y) in zip(a, back) { XCTAssertEqual(x, y, accuracy: 1e-5) }
            let utu = Linalg.matmul(u, u, m: r, k: m, n: r, transA: true)
            for i in 0..<r { for j in 0..<r { XCTAssertEqual(utu[i * r + j], i == j ? 1 : 0, accuracy: 1e-5) } }
        }
    }

    func testSeededRNGIsReproduciblePerKey() {
        var a = SeededRNG(seed: 5, key: "x"), b = SeededRNG(seed: 5, key: "x"), c = SeededRNG(seed: 5, key: "y")
        let xa = (0..<8).map { _ in a.next() }, xb = (0..<8).map { _ in b.next() }, xc = (0..<8).map { _ in c.next() }
        XCTAssertEqual(xa, xb)
        XCTAssertNotEqual(xa, xc)
    }
}

final class KernelTests: XCTestCase {
    func testKeepTopKMatchesScalarRuleWithTies() {
        var rng = SeededRNG(seed: 9)
        let n = 1000
        let v: [Float] = (0..<n).map { _ in Float(Int(rng.next() % 9)) - 4 }
        for k in [1, 100, 333, 999] {
            let t = v.withUnsafeBufferPointer { Selection.topKMagnitude($0, minus: nil, k: k) }
            var x = v
            x.withUnsafeMutableBufferPointer { Kernels.keepTopK($0.baseAddress!, count: n, start: 0, t) }
            let expected = v.enumerated().map { t.contains(magnitudeBits: abs($0.element).bitPattern, index: $0.offset) ? $0.element : 0 }
            XCTAssertEqual(x, expected)
            XCTAssertEqual(x.filter { $0 != 0 }.count, min(k, v.filter { $0 != 0 }.count))
        }
    }
}

final class QuantizedMatrixTests: XCTestCase {
    /// Each block format's matrix–vector product equals the product with the weights it encodes.
    func testMatvecEqualsDenseProduct() {
        var rng = SeededRNG(seed: 21)
        let rows = 5, cols = 64
        let x: [Float] = (0..<cols).map { _ in rng.nextUnitFloat() - 0.5 }
        for format in [QuantizedMatrix.Format.q8_0, .q4_0, .q4_1, .f16, .bf16] {
            var bytes: [UInt8] = []
            var dense: [Float] = []
            func half(_ v: Float) -> [UInt8] { withUnsafeBytes(of: Float16(v).bitPattern.littleEndian) { Array($0) } }
            for _ in 0..<rows {
                switch format {
                case .q8_0:
                    for _ in 0..<(cols / 32) {
                        let d: Float = 0.03
                        bytes += half(d)
                        for _ in 0..<32 { let q = Int8(truncatingIfNeeded: Int(rng.next() % 255) - 127); bytes.append(UInt8(bitPattern: q)); dense.append(Float(Float16(d)) * Float(q)) }
                    }
                case .q4_0, .q4_1:
                    for _ in 0..<(cols / 32) {
                        let d: Float = 0.05, m: Float = -0.2
                        bytes += half(d); if format == .q4_1 { bytes += half(m) }
                        let qs = (0..<32).map { _ in UInt8(rng.next() % 16) }
                        for j in 0..<16 { bytes.append(qs[j] | (qs[j + 16] << 4)) }
                        for j in 0..<32 {
                            dense.append(format == .q4_1 ? Float(qs[j]) * Float(Float16(d)) + Float(Float16(m)) : Float(Int(qs[j]) - 8) * Float(Float16(d)))
                        }
                    }
                case .f16:
                    for _ in 0..<cols { let v = Float(Float16(rng.nextUnitFloat() - 0.5)); bytes += half(v); dense.append(v) }
                case .bf16:
                    for _ in 0..<cols {
                        let b = Convert.bf16Bits(rng.nextUnitFloat() - 0.5)
                        bytes += withUnsafeBytes(of: b.littleEndian) { Array($0) }
                        dense.append(Float(bitPattern: UInt32(b) << 16))
                    }
                }
            }
            var y = [Float](repeating: 0, count: rows), y8 = y
            bytes.withUnsafeBytes { b in
                let q = QuantizedMatrix(format: format, rows: rows, cols: cols, data: b.baseAddress!, owner: nil)
                x.withUnsafeBufferPointer { xb in
                    y.withUnsafeMutableBufferPointer { q.matvec(xb.baseAddress!, into: $0.baseAddress!) }
                    y8.withUnsafeMutableBufferPointer { q.matvecInt8(xb.baseAddress!, into: $0.baseAddress!) }
                }
            }
            for r in 0..<rows {
                let want = (0..<cols).reduce(Float(0)) { $0 + dense[r * cols + $1] * x[$1] }
                XCTAssertEqual(y[r], want, accuracy: 1e-4, "\(format) row \(r)")
                // 8-bit activations: error bounded by the weights' magnitude times the activation step.
                let bound = (0..<cols).reduce(Float(0)) { $0 + abs(dense[r * cols + $1]) } * (0.5 / 127) + 1e-4
                XCTAssertEqual(y8[r], want, accuracy: bound, "\(format) row \(r), int8 activations")
            }
        }
    }
}

/// bf16 products: equal (to float32 summation order) to a double-precision product of the
/// bf16-rounded inputs, for shapes that exercise every edge (odd k, partial panels and row blocks,
/// several k blocks), with and without transposed packing and beta.
final class BF16MatrixTests: XCTestCase {
    func bf16(_ x: Float) -> Double {
        var u = x.bitPattern
        u = (u &+ 0x7fff &+ ((u >> 16) & 1)) & 0xffff_0000
        return Double(Float(bitPattern: u))
    }

    func testProductsMatchRoundedInputsInDouble() {
        var rng = SeededRNG(seed: 5)
        for (m, k, n) in [(1, 1, 1), (7, 5, 3), (13, 33, 70), (100, 300, 130), (6, 257, 64)] {
            let a = (0..<(m * k)).map { _ in rng.nextUnitFloat() * 2 - 1 }
            let b = (0..<(k * n)).map { _ in rng.nextUnitFloat() * 2 - 1 }
            let bt = (0..<(n * k)).map { i in b[(i % k) * n + i / k] }  // [n × k]
            let c0 = (0..<(m * n)).map { _ in rng.nextUnitFloat() }
            for (transposed, beta) in [(false, Float(0)), (true, Float(0.5))] {
                let mat = transposed ? bt.withUnsafeBufferPointer { BF16Matrix($0.baseAddress!, k: k, n: n, transposed: true) }
                                     : b.withUnsafeBufferPointer { BF16Matrix($0.baseAddress!, k: k, n: n, transposed: false) }
                var c = c0
                a.withUnsafeBufferPointer { ap in c.withUnsafeMutableBufferPointer { cp in
                    mat.multiply(ap.baseAddress!, m: m, into: cp.baseAddress!, beta: beta)
                } }
                var worst = 0.0
                for i in 0..<m {
                    for j in 0..<n {
                        var s = 0.0, mag = 0.0
                        for l in 0..<k { let p = bf16(a[i * k + l]) * bf16(b[l * n + j]); s += p; mag += abs(p) }
                        s += Double(beta) * Double(c0[i * n + j])
                        worst = max(worst, abs(Double(c[i * n + j]) - s) / max(mag, 1e-6))
                    }
                }
                XCTAssertLessThan(worst, 1e-6, "m \(m) k \(k) n \(n) transposed \(transposed)")
            }
        }
    }
}

final class ParallelGemmTests: XCTestCase {
    /// The column-split product equals one BLAS call, for both layouts of B and with beta.
    func testColumnSplitEqualsOneCall() {
        Linalg.useSingleThreadedBLAS()
        var rng = SeededRNG(seed: 9)
        let (m, k, n) = (150, 130, 700)
        let a = (0..<(m * k)).map { _ in rng.nextUnitFloat() - 0.5 }, b = (0..<(k * n)).map { _ in rng.nextUnitFloat() - 0.5 }
        let c0 = (0..<(m * n)).map { _ in rng.nextUnitFloat() }
        for transB in [false, true] {
            var want = c0, got = c0
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in
                want.withUnsafeMutableBufferPointer { Linalg.gemm(m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, transB: transB, beta: 0.5, c: $0.baseAddress!) }
                got.withUnsafeMutableBufferPointer { Linalg.gemmParallel(m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, transB: transB, beta: 0.5, c: $0.baseAddress!) }
            } }
            for i in 0..<(m * n) { XCTAssertEqual(got[i], want[i], accuracy: 1e-4) }
        }
    }
}

final class StorageTests: XCTestCase {
    /// Buffers are 64-byte aligned, and a loop that allocates and frees buffers of the same few sizes
    /// (a model's activations, batch after batch) reuses the freed memory instead of growing the heap.
    func testFixedSizeAllocationsReuseFreedMemory() {
        for n in [1, 3, 1000, 786_432] { XCTAssertEqual(Int(bitPattern: FloatBuffer(count: n).values.baseAddress!) % 64, 0) }
        ProcessMemory.keepFreedBlocks()  // as graft does at start-up: large blocks come from the heap
        let before = ProcessMemory.heapBytes
        // A BERT layer's activations, batch after batch (sizes in floats: 2048 tokens × 384 and × 1536),
        // with the small allocations worker threads make in between.
        let (h, wide) = (786_432, 3_145_728)
        func touch(_ b: FloatBuffer) -> FloatBuffer { b.mutable[b.count - 1] = 1; return b }
        for _ in 0..<200 {
            var x = touch(FloatBuffer(count: h))
            for _ in 0..<6 {
                let q = touch(FloatBuffer(count: h)), k = touch(FloatBuffer(count: h)), v = touch(FloatBuffer(count: h))
                let ctx = touch(FloatBuffer(count: h))
                parallelFor(count: 4, minChunk: 1) { _ in _ = FloatBuffer(count: 2048) }
                _ = (q, k, v)
                let a = touch(FloatBuffer(count: h))
                _ = ctx
                let u = touch(FloatBuffer(count: wide))
                let d = touch(FloatBuffer(count: h))
                _ = (u, a)
                x = d
            }
            _ = x
        }
        // At most ~40 MB are live at once; with 64-byte-aligned allocations from glibc's memalign the heap
        // had grown past 64 MB after 50 rounds and kept growing.
        let grown = Double(ProcessMemory.heapBytes - before) / 1_048_576
        XCTAssertLessThan(grown, 56, "the heap grew by \(Int(grown)) MB over 200 rounds of the same sizes")
    }
}
