import ArgumentParser
import Foundation
import GraftFormats
import GraftTensor

/// The kernel choices measured on this CPU, kept in `$GRAFT_HOME/tuning/<CPU key>.json` (one file per
/// CPU model and kernel instruction set, as FFTW keeps its wisdom): measured the first time a command
/// that runs products needs them (about half a second), read from the file afterwards, so a CPU keeps its
/// choices — and its results to the last bit — from run to run. `graft tune` measures again.
enum TuningCache {
    static var path: String {
        let home = GraftHome.path
        return home + "/tuning/" + CPUInfo.current.key + ".json"
    }

    /// The stored choices, or nil when there are none (or the file is not one of ours: it is then
    /// measured again and replaced).
    static func load() -> (KernelChoices, [KernelChoices.Timing], String)? {
        guard let data = FileManager.default.contents(atPath: path), let json = try? JSONValue.parse([UInt8](data)),
              let kc = json["f32_block_k"]?.intValue, let strassen = json["strassen"]?.boolValue,
              let bf16 = json["bf16"]?.boolValue, let packedTraining = json["packed_training"]?.boolValue else { return nil }
        let timings = (json["timings"]?.arrayValue ?? []).compactMap { t -> KernelChoices.Timing? in
            guard let c = t["candidate"]?.stringValue, let g = t["gflops"]?.doubleValue else { return nil }
            return KernelChoices.Timing(candidate: c, gflops: g)
        }
        let choices = KernelChoices(f32BlockK: Int(kc), strassen: strassen, bf16: bf16 && BF16Matrix.hardwareAccelerated,
                                    packedTraining: packedTraining)
        return (choices, timings, json["measured"]?.stringValue ?? "")
    }

    /// The choices as the file (and `graft doctor --json`) names them.
    static func fields(_ c: KernelChoices) -> [(String, JSONValue)] {
        [("f32_block_k", .int(Int64(c.f32BlockK))), ("strassen", .bool(c.strassen)), ("bf16", .bool(c.bf16)),
         ("packed_training", .bool(c.packedTraining))]
    }

    /// One line per choice, for people.
    static func describe(_ c: KernelChoices) -> [String] {
        ["float32 products: \(c.strassen ? "Strassen (one level) where k, n ≥ 384" : "classical"), k block \(c.f32BlockK)",
         "training's float32 products: \(c.packedTraining ? "over the weights packed once" : "BLAS SGEMM")",
         "--precision auto: \(c.bf16 ? "bf16" : "f32")"]
    }

    /// Measures, stores (atomically: a partial file is never read) and returns the choices.
    @discardableResult
    static func measureAndStore() throws -> (KernelChoices, [KernelChoices.Timing]) {
        let (choices, timings) = KernelChoices.measure()
        let json = JSONValue.object([
            ("cpu", .string(CPUInfo.current.summary)), ("kernels", .string(Kernels.f32InstructionSet)),
            ("measured", .string(ISO8601DateFormatter().string(from: Date()))),
        ] + fields(choices) + [
            ("timings", .array(timings.map { .object([("candidate", .string($0.candidate)), ("gflops", .double($0.gflops))]) })),
        ])
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try DurableFile.write(json.serialized(pretty: true) + "\n", to: path)
        return (choices, timings)
    }

    /// Puts the stored choices in force, measuring them first if this CPU has none. `GRAFT_NO_TUNE=1`
    /// keeps the defaults. A cache that cannot be written only costs the measurement next time.
    static func ensure() {
        if ProcessInfo.processInfo.environment["GRAFT_NO_TUNE"] != nil { return }
        if let (choices, _, _) = load() { KernelChoices.apply(choices); return }
        printErr("measuring the kernels on this CPU (once; graft doctor shows the choices)")
        let choices: KernelChoices
        do { choices = try measureAndStore().0 } catch {
            printErr("warning: could not store the kernel choices in \(path): \(error)")
            choices = KernelChoices.measure().0
        }
        KernelChoices.apply(choices)
    }
}

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "What Graft runs on: the CPU, the kernels this build carries, the BLAS library's choice and the measured kernel choices.",
        discussion: """
        Warns when this build's kernels are narrower than the CPU (built on another machine), when OpenBLAS \
        runs generic kernels on a CPU with AVX2 or AVX-512 (Graft starts itself again with OPENBLAS_CORETYPE \
        set unless GRAFT_KEEP_BLAS_CORE=1), and when no kernel choices have been measured yet (graft tune).

        Examples:
          graft doctor
          graft doctor --json
        """)

    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let cpu = CPUInfo.current
        let stored = TuningCache.load()
        let choices = stored?.0 ?? KernelChoices.defaults
        var warnings: [String] = []
        let missing = cpu.features.subtracting(cpu.buildFeatures).intersection([.avx2, .fma, .avx512f, .avx512bw, .avx512vl, .avx512dq])
        if !missing.isEmpty {
            warnings.append("this build lacks \(missing.names.joined(separator: ", ")) that the CPU has: rebuild on this machine (make build)")
        }
        if Kernels.f32InstructionSet == "portable" {
            warnings.append("the float32 kernels are portable C (no AVX2 + FMA in this build): several times slower")
        }
        if BLASCore.isGeneric {
            warnings.append("OpenBLAS runs generic '\(BLASCore.name)' kernels on a CPU with \(cpu.features.avx512 ? "AVX-512" : "AVX2"): every BLAS product is several times slower")
        }
        if stored == nil { warnings.append("no kernel choices measured on this CPU yet: defaults shown (graft tune measures them)") }
        if json {
            let obj = JSONValue.object([
                ("cpu", .string(cpu.modelName)), ("vendor", .string(cpu.vendor)), ("family", .int(Int64(cpu.family))),
                ("model", .int(Int64(cpu.model))), ("cpu_features", .array(cpu.features.names.map { .string($0) })),
                ("build_features", .array(cpu.buildFeatures.names.map { .string($0) })),
                ("f32_kernels", .string(Kernels.f32InstructionSet)), ("bf16_hardware", .bool(BF16Matrix.hardwareAccelerated)),
                ("blas_core", .string(BLASCore.name)), ("blas_core_replaced", BLASCore.replaced.map { .string($0) } ?? .null),
                ("blas_generic", .bool(BLASCore.isGeneric)), ("blas_config", .string(BLASCore.configuration)),
                ("threads", .int(Int64(graftThreadCount))), ("tuning_file", .string(TuningCache.path)), ("tuned", .bool(stored != nil)),
            ] + TuningCache.fields(choices) + [
                ("warnings", .array(warnings.map { .string($0) })),
            ])
            print(obj.serialized(pretty: true))
            return
        }
        print("CPU          \(cpu.summary)")
        print("             \(cpu.features.names.joined(separator: " "))")
        print("build        float32 kernels: \(Kernels.f32InstructionSet); bf16 kernel: \(BF16Matrix.hardwareAccelerated ? "AVX512-BF16" : "portable (not used by --precision auto)")")
        let replaced = BLASCore.replaced.map { " (OpenBLAS chose '\($0)'; replaced through OPENBLAS_CORETYPE)" } ?? ""
        print("BLAS         \(BLASCore.name)\(replaced) — \(BLASCore.configuration)")
        print("threads      \(graftThreadCount) (GRAFT_THREADS to change)")
        print("choices      \(stored == nil ? "defaults, not measured" : "measured \(stored!.2)") — \(TuningCache.path)")
        for line in TuningCache.describe(choices) { print("  " + line) }
        for t in stored?.1 ?? [] { print(String(format: "    %-34@ %6.1f GFLOPS", t.candidate as NSString, t.gflops)) }
        for w in warnings { print("warning: \(w)") }
    }
}

struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "Measure the kernel candidates on this CPU again and keep the fastest (under $GRAFT_HOME/tuning).",
        discussion: """
        Times the float32 product's k blocking, Strassen against the classical order, training's float32 \
        products over packed weights against BLAS and, on CPUs with AVX512-BF16, bf16 against float32 products, with the cores Graft uses (about half a second). \
        Commands that run products measure once by themselves; run this after changing GRAFT_THREADS or \
        when the machine was busy during the first measurement. A candidate replaces the default only \
        when at least 5 % faster.
        """)

    func run() throws {
        let (choices, timings) = try TuningCache.measureAndStore()
        for t in timings { print(String(format: "%-34@ %6.1f GFLOPS", t.candidate as NSString, t.gflops)) }
        print("chosen:"); for line in TuningCache.describe(choices) { print("  " + line) }
        print("stored in \(TuningCache.path)")
    }
}
