import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if os(Linux)
import CBLAS
#endif

/// The CPU Graft runs on: what `graft doctor` prints and what names the tuning cache.
public struct CPUInfo: Sendable {
    /// Instruction-set extensions, as bits of `graft_cpu_features`.
    public struct Features: OptionSet, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let avx2 = Features(rawValue: GRAFT_CPU_AVX2)
        public static let fma = Features(rawValue: GRAFT_CPU_FMA)
        public static let f16c = Features(rawValue: GRAFT_CPU_F16C)
        public static let avx512f = Features(rawValue: GRAFT_CPU_AVX512F)
        public static let avx512bw = Features(rawValue: GRAFT_CPU_AVX512BW)
        public static let avx512vl = Features(rawValue: GRAFT_CPU_AVX512VL)
        public static let avx512dq = Features(rawValue: GRAFT_CPU_AVX512DQ)
        public static let avx512vnni = Features(rawValue: GRAFT_CPU_AVX512VNNI)
        public static let avx512bf16 = Features(rawValue: GRAFT_CPU_AVX512BF16)
        static let named: [(Features, String)] = [(.avx2, "avx2"), (.fma, "fma"), (.f16c, "f16c"), (.avx512f, "avx512f"),
                                                  (.avx512bw, "avx512bw"), (.avx512vl, "avx512vl"), (.avx512dq, "avx512dq"),
                                                  (.avx512vnni, "avx512vnni"), (.avx512bf16, "avx512bf16")]
        /// AVX-512 as the float32 kernels and OpenBLAS's SkylakeX kernels use it.
        public var avx512: Bool { isSuperset(of: [.avx512f, .avx512bw, .avx512vl, .avx512dq]) }
        public var avx2: Bool { isSuperset(of: [.avx2, .fma]) }
        public var names: [String] { Self.named.filter { contains($0.0) }.map(\.1) }
    }

    /// `model name` of /proc/cpuinfo (e.g. "AMD EPYC", "Intel(R) Xeon(R) Platinum 8581C CPU @ 2.10GHz").
    public let modelName: String
    public let vendor: String
    public let family: Int, model: Int
    /// What the CPU has (cpuid).
    public let features: Features
    /// What this build of Graft was compiled for (`-march=native` on the machine that built it).
    public let buildFeatures: Features

    /// The machine this process runs on.
    public static let current = CPUInfo()

    private init() {
        var fields: [String: String] = [:]
        #if os(Linux)
        // The first processor's block is enough: the cores of one machine are alike.
        if let file = fopen("/proc/cpuinfo", "r") {
            defer { fclose(file) }
            var line: UnsafeMutablePointer<CChar>? = nil, capacity = 0
            defer { free(line) }
            while getline(&line, &capacity, file) > 0, let l = line {
                let text = String(cString: l)
                if text == "\n" { break }
                let parts = text.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { continue }
                fields[trimmed(parts[0])] = trimmed(parts[1])
            }
        }
        #endif
        modelName = fields["model name"] ?? "unknown"
        vendor = fields["vendor_id"] ?? "unknown"
        family = Int(fields["cpu family"] ?? "") ?? 0
        model = Int(fields["model"] ?? "") ?? 0
        features = Features(rawValue: graft_cpu_features())
        buildFeatures = Features(rawValue: graft_build_features())
    }

    /// One line: model name, family and model, the widest vector extension.
    public var summary: String {
        let isa = features.avx512 ? "AVX-512" : features.avx2 ? "AVX2+FMA" : "no AVX2"
        return "\(modelName) (\(vendor) family \(family) model \(model), \(isa))"
    }

    /// A file-name-safe key for per-CPU caches: vendor, family, model and model name, plus the kernels
    /// this build carries (a build for another instruction set must measure again).
    public var key: String {
        let raw = "\(vendor)-\(family)-\(model)-\(modelName)-\(Kernels.f32InstructionSet)"
        return String(raw.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." ? $0 : "_" })
    }
}

/// The BLAS library's kernel choice. Debian 12's OpenBLAS 0.3.21 picks its kernels by CPU model and
/// falls back to its oldest x86-64 ones ("Prescott") on a model it does not know — seen on Intel Xeon
/// family 6 model 207, where every BLAS product then ran 5× slow. Graft checks the choice against the
/// CPU's own instruction set at start and, when it is generic, starts itself again with
/// `OPENBLAS_CORETYPE` naming the kernels the CPU can run (`ensureFastKernels`).
public enum BLASCore {
    /// OpenBLAS's name for the kernels in use ("Accelerate" on macOS).
    public static var name: String {
        #if os(Linux)
        return openblas_get_corename().map { String(cString: $0) } ?? "unknown"
        #else
        return "Accelerate"
        #endif
    }

    /// OpenBLAS's build description (version, DYNAMIC_ARCH, threads).
    public static var configuration: String {
        #if os(Linux)
        return openblas_get_config().map { trimmed(Substring(String(cString: $0))) } ?? "unknown"
        #else
        return "Accelerate"
        #endif
    }

    /// OpenBLAS 0.3.21's cores whose kernels use AVX-512, and those that use at least AVX2 + FMA.
    static let avx512Cores: Set<String> = ["SkylakeX", "Cooperlake", "SapphireRapids"]
    static let avx2Cores: Set<String> = avx512Cores.union(["Haswell", "Zen", "Excavator"])

    /// The core to ask OpenBLAS for instead of `core` on a CPU with `features`, or nil when `core` already
    /// uses the widest vectors the CPU has. `explicit`: the user named `core` in OPENBLAS_CORETYPE; it is
    /// kept unless it lacks AVX2 on a CPU that has it, or asks for AVX-512 on a CPU without it (an AVX2
    /// core on an AVX-512 CPU can be a deliberate way around a faulty AVX-512 kernel).
    public static func replacement(for core: String, features: CPUInfo.Features, explicit: Bool) -> String? {
        let best = features.avx512 ? (features.contains(.avx512bf16) ? "Cooperlake" : "SkylakeX") : features.avx2 ? "Haswell" : nil
        guard let best else { return nil }
        let fits = features.avx512 ? avx512Cores.contains(core) || (explicit && avx2Cores.contains(core))
                                   : avx2Cores.contains(core) && !avx512Cores.contains(core)  // AVX-512 kernels would fault
        return fits ? nil : best
    }

    /// True when the kernels in use are not what `ensureFastKernels` would keep (what `graft doctor`
    /// warns about): older than the CPU, or AVX-512 kernels on a CPU without it.
    public static var isGeneric: Bool {
        #if os(Linux)
        return replacement(for: name, features: CPUInfo.current.features, explicit: userNamedCore) != nil
        #else
        return false
        #endif
    }

    /// Whether the user (not Graft's re-execution) set OPENBLAS_CORETYPE.
    private static var userNamedCore: Bool { getenv("OPENBLAS_CORETYPE") != nil && replaced == nil }

    /// Called first by `graft`: when OpenBLAS chose generic kernels, re-executes this program with
    /// OPENBLAS_CORETYPE set (OpenBLAS reads it once, when it is loaded, so nothing less than a new
    /// process changes the choice). `GRAFT_KEEP_BLAS_CORE=1` keeps OpenBLAS's own choice. Returns only
    /// when nothing needs changing or the re-execution failed.
    public static func ensureFastKernels() {
        #if os(Linux)
        let keep = getenv("GRAFT_KEEP_BLAS_CORE").map { String(cString: $0) == "1" } ?? false
        guard !keep, getenv("GRAFT_BLAS_CORE_REPLACED") == nil else { return }
        let detected = name
        guard let better = replacement(for: detected, features: CPUInfo.current.features, explicit: userNamedCore) else { return }
        setenv("OPENBLAS_CORETYPE", better, 1)
        setenv("GRAFT_BLAS_CORE_REPLACED", detected, 1)  // also stops a second re-execution
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // Only reached when exec failed: carry on with the slow kernels (`graft doctor` says so).
        unsetenv("GRAFT_BLAS_CORE_REPLACED")
        #endif
    }

    /// The core OpenBLAS had chosen before `ensureFastKernels` replaced it, if it did.
    public static var replaced: String? {
        getenv("GRAFT_BLAS_CORE_REPLACED").map { String(cString: $0) }
    }
}

private func trimmed(_ s: Substring) -> String {
    String(s.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\n" }.reversed())
}
