import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which kernels the products use on this CPU, chosen by timing the candidates (`measure()`), not by
/// the CPU's name or flags: the AVX-512 bf16 kernel tuned on Zen 4 was slower than float32 on an Intel
/// Xeon, and Strassen's float32 products, 7–12 % faster with AVX-512 on Zen 4, were slower with AVX2
/// on Zen 3 at most shapes (MiniLM embeddings 0.93× the classical order). The CLI keeps the measured choices per CPU under
/// `$GRAFT_HOME/tuning` (as FFTW keeps its wisdom) and applies them at start; libraries and tests use
/// `defaults` unless something calls `apply`.
public struct KernelChoices: Sendable, Equatable {
    /// k per cache block of the float32 products (`CKernels/f32gemm.c`).
    public var f32BlockK: Int
    /// One level of Strassen's algorithm for float32 inference products where k and n are even and ≥ 384
    /// (`F32Matrix.Algorithm.automatic`).
    public var strassen: Bool
    /// bf16 products for the frozen weights under `--precision auto`.
    public var bf16: Bool
    /// Training's float32 products with a frozen weight over the weight packed once (`F32Matrix`) rather
    /// than BLAS SGEMM (`Linear.packForTraining`).
    public var packedTraining: Bool

    public init(f32BlockK: Int, strassen: Bool, bf16: Bool, packedTraining: Bool) {
        self.f32BlockK = f32BlockK; self.strassen = strassen; self.bf16 = bf16; self.packedTraining = packedTraining
    }

    /// Before any measurement: the instruction set's defaults (Strassen and bf16 as measured on Zen 4,
    /// where the kernels were written).
    public static var defaults: KernelChoices {
        KernelChoices(f32BlockK: Int(graft_f32_default_kc()), strassen: graft_f32_isa() == 2, bf16: BF16Matrix.hardwareAccelerated,
                      packedTraining: graft_f32_isa() != 0)
    }

    nonisolated(unsafe) private static var current = KernelChoices.defaults
    /// The choices in force.
    public static var active: KernelChoices { current }

    /// Puts `choices` in force for the products created or run from now on (call before work starts).
    public static func apply(_ choices: KernelChoices) {
        current = choices
        graft_f32_set_kc(Int32(choices.f32BlockK))
    }

    /// A timed candidate: its name and its rate.
    public struct Timing: Sendable {
        public let candidate: String
        public let gflops: Double
        public init(candidate: String, gflops: Double) { self.candidate = candidate; self.gflops = gflops }
    }

    /// Times the candidates on this CPU with the cores Graft uses (about half a second) and returns the choices
    /// with the timings behind them. A candidate replaces the default only when it is at least 5 %
    /// faster, so that timing noise does not flip choices (and results' rounding) between runs.
    public static func measure() -> (KernelChoices, [Timing]) {
        let saved = graft_f32_kc()
        defer { graft_f32_set_kc(saved) }
        var timings: [Timing] = []
        var choices = KernelChoices.defaults
        // A BERT-small FFN's down-projection (k 1536 → n 384: k spans several block candidates) with
        // enough rows to split over the cores.
        let (m, k, n) = (768, 1536, 384)
        var rng = SeededRNG(seed: 11)
        let a = (0..<(m * k)).map { _ in rng.nextUnitFloat() - 0.5 }
        let b = (0..<(k * n)).map { _ in rng.nextUnitFloat() - 0.5 }
        var c = [Float](repeating: 0, count: m * n)
        func rate(_ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> Double {
            a.withUnsafeBufferPointer { ap in
                c.withUnsafeMutableBufferPointer { cp in
                    body(ap.baseAddress!, cp.baseAddress!)  // warm-up
                    var best = Double.infinity
                    for _ in 0..<5 {
                        let t0 = monotonicSeconds()
                        body(ap.baseAddress!, cp.baseAddress!)
                        best = min(best, monotonicSeconds() - t0)
                    }
                    return 2 * Double(m * k * n) / best / 1e9
                }
            }
        }
        func better(_ x: Double, than y: Double) -> Bool { x > 1.05 * y }
        /// Whether the candidate is used: the default stays unless the other is 5 % faster.
        func use(_ candidate: Double, against other: Double, byDefault: Bool) -> Bool {
            byDefault ? !better(other, than: candidate) : better(candidate, than: other)
        }

        let classical = b.withUnsafeBufferPointer { F32Matrix($0.baseAddress!, k: k, n: n, transposed: false, algorithm: .classical) }
        _ = rate { classical.multiply($0, m: m, into: $1) }  // the clock up to speed before the first candidate
        var blockRates: [(Int, Double)] = []
        for kc in [192, 384, 768, 1536] {
            graft_f32_set_kc(Int32(kc))
            let r = rate { classical.multiply($0, m: m, into: $1) }
            blockRates.append((kc, r))
            timings.append(Timing(candidate: "f32 classical, k block \(kc)", gflops: r))
        }
        let defaultRate = blockRates.first { $0.0 == choices.f32BlockK }?.1 ?? 0
        if let best = blockRates.max(by: { $0.1 < $1.1 }), better(best.1, than: defaultRate) { choices.f32BlockK = best.0 }
        graft_f32_set_kc(Int32(choices.f32BlockK))
        let classicalRate = blockRates.first { $0.0 == choices.f32BlockK }?.1 ?? defaultRate

        let strassen = b.withUnsafeBufferPointer { F32Matrix($0.baseAddress!, k: k, n: n, transposed: false, algorithm: .strassen) }
        let strassenRate = rate { strassen.multiply($0, m: m, into: $1) }
        timings.append(Timing(candidate: "f32 Strassen, k block \(choices.f32BlockK)", gflops: strassenRate))
        choices.strassen = use(strassenRate, against: classicalRate, byDefault: choices.strassen)

        // Training's products with a frozen weight: packed float32 and, where the CPU has
        // AVX512-BF16, packed bf16, against float32 SGEMM split by columns over single-threaded BLAS, as
        // training runs it.
        let blasRate = Linalg.withSingleThreadedBLAS {
            b.withUnsafeBufferPointer { bp in rate { Linalg.gemmParallel(m: m, n: n, k: k, a: $0, b: bp.baseAddress!, c: $1) } }
        }
        timings.append(Timing(candidate: "f32 BLAS (training)", gflops: blasRate))
        // Training packs in the classical order (`Linear.packForTraining`).
        choices.packedTraining = use(classicalRate, against: blasRate, byDefault: choices.packedTraining)
        if BF16Matrix.hardwareAccelerated {
            let bf = b.withUnsafeBufferPointer { BF16Matrix($0.baseAddress!, k: k, n: n, transposed: false) }
            let bfRate = rate { bf.multiply($0, m: m, into: $1) }
            timings.append(Timing(candidate: "bf16 packed (training)", gflops: bfRate))
            choices.bf16 = use(bfRate, against: max(blasRate, choices.packedTraining ? classicalRate : 0), byDefault: choices.bf16)
        } else {
            choices.bf16 = false
        }
        return (choices, timings)
    }
}

/// Seconds on a monotonic clock.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
