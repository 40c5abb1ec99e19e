import GraftTensor
import XCTest

/// Which OpenBLAS kernels Graft asks for on which CPU.
final class CPUTests: XCTestCase {
    let avx2: CPUInfo.Features = [.avx2, .fma, .f16c]
    var avx512: CPUInfo.Features { avx2.union([.avx512f, .avx512bw, .avx512vl, .avx512dq]) }

    func testGenericCoresAreReplacedByWhatTheCPURuns() {
        // Debian's OpenBLAS 0.3.21 on an Intel Xeon family 6 model 207 (AVX-512 with BF16): Prescott.
        XCTAssertEqual(BLASCore.replacement(for: "Prescott", features: avx512.union(.avx512bf16), explicit: false), "Cooperlake")
        XCTAssertEqual(BLASCore.replacement(for: "Prescott", features: avx512, explicit: false), "SkylakeX")
        XCTAssertEqual(BLASCore.replacement(for: "Nehalem", features: avx2, explicit: false), "Haswell")
        XCTAssertEqual(BLASCore.replacement(for: "Sandybridge", features: avx2, explicit: true), "Haswell")
        XCTAssertEqual(BLASCore.replacement(for: "Haswell", features: avx512, explicit: false), "SkylakeX")
        // AVX-512 kernels on a CPU without AVX-512 would fault.
        XCTAssertEqual(BLASCore.replacement(for: "SkylakeX", features: avx2, explicit: true), "Haswell")
    }

    func testFittingOrDeliberateCoresAreKept() {
        XCTAssertNil(BLASCore.replacement(for: "Zen", features: avx2, explicit: false))          // AMD Zen 3
        XCTAssertNil(BLASCore.replacement(for: "Haswell", features: avx2, explicit: false))
        XCTAssertNil(BLASCore.replacement(for: "Cooperlake", features: avx512.union(.avx512bf16), explicit: false))  // Zen 4
        XCTAssertNil(BLASCore.replacement(for: "SkylakeX", features: avx512, explicit: false))
        // A user who names AVX2 kernels on an AVX-512 CPU (around a faulty AVX-512 kernel) keeps them.
        XCTAssertNil(BLASCore.replacement(for: "Haswell", features: avx512, explicit: true))
        // Nothing wider to ask for.
        XCTAssertNil(BLASCore.replacement(for: "Prescott", features: [], explicit: false))
    }

    func testThisMachine() {
        let cpu = CPUInfo.current
        XCTAssertFalse(cpu.key.isEmpty)
        XCTAssertFalse(cpu.key.contains("/") || cpu.key.contains(" "), cpu.key)
        // A build for wider vectors than the CPU has would not run at all; the kernels match the build.
        XCTAssertTrue(cpu.features.isSuperset(of: cpu.buildFeatures.intersection([.avx2, .fma, .avx512f])))
        if cpu.buildFeatures.avx512 { XCTAssertEqual(Kernels.f32InstructionSet, "avx512") }
        else if cpu.buildFeatures.avx2 { XCTAssertEqual(Kernels.f32InstructionSet, "avx2") }
    }

    /// The tuner measures training's single-threaded BLAS products without changing the process's setting.
    func testSingleThreadedBLASIsRestored() {
        let before = Linalg.blasIsSingleThreaded
        Linalg.withSingleThreadedBLAS { XCTAssertTrue(Linalg.blasIsSingleThreaded) }
        XCTAssertEqual(Linalg.blasIsSingleThreaded, before)
    }
}
