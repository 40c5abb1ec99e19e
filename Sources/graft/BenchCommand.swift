import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GraftFormats
import GraftTensor

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks against the peers, measured in the same run.",
        subcommands: [BenchMerge.self, BenchEmbed.self, BenchGenerate.self, BenchTrain.self, BenchGemm.self])
}

struct BenchMerge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Time and peak memory of graft merge (and mergekit, when on PATH) on SmolLM2-135M-shaped fine-tunes.",
        discussion: """
        Generates (once, with Graft's own writer) a base and four fine-tunes with SmolLM2-135M's tensor shapes in float32 (≈ 538 MB each), then runs `graft merge` for ties (density 0.3) and task_arithmetic as child processes, reporting wall time, peak RSS and the I/O limit (bytes read + written over the measured file-copy bandwidth).

        When mergekit is installed — `mergekit-yaml` on PATH, or the environment ../shared/tools/peer-env.sh builds in /tmp/graft-peers — it runs on the same inputs in the same run and the ratios are printed.
        """)

    @Option(help: "Working folder for the generated models and outputs (default: $GRAFT_HOME/bench/merge).")
    var dir: String?

    @Option(help: "Number of fine-tunes.")
    var models: Int = 4

    @Option(help: "Number of transformer layers (30 as in SmolLM2-135M; fewer for a quick run).")
    var layers: Int = 30

    @Option(help: "Methods to run, comma-separated.")
    var methods: String = "ties,task_arithmetic"

    @Flag(help: "Skip mergekit even if it is installed.")
    var noPeer = false

    @Flag(help: "Print the results as JSON.")
    var json = false

    func run() throws {
        let home = ProcessInfo.processInfo.environment["GRAFT_HOME"] ?? (NSHomeDirectory() + "/.cache/graft")
        let root = dir ?? home + "/bench/merge"
        let modelsDir = root + "/models-\(layers)l"
        try SyntheticLlama.ensure(at: modelsDir, fineTunes: models, layers: layers)
        let inputBytes = try (0...models).reduce(0) { acc, i in
            acc + (try Checkpoint(path: modelsDir + "/" + SyntheticLlama.name(i))).dataBytes
        }
        let outputBytes = try Checkpoint(path: modelsDir + "/base").dataBytes
        let bandwidth = try measureCopyBandwidth(modelsDir + "/base/model.safetensors", scratch: root + "/copy.tmp")
        let ioLimit = Double(inputBytes + outputBytes) / bandwidth
        let graft = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        // The peer: mergekit-yaml on PATH, else the environment ../shared/tools/peer-env.sh builds by default.
        let defaultPeer = "/tmp/graft-peers/venv/bin/mergekit-yaml"
        let mergekit = noPeer ? nil : which("mergekit-yaml") ?? (FileManager.default.isExecutableFile(atPath: defaultPeer) ? defaultPeer : nil)
        printErr(String(format: "inputs %@ (base + %d), output %@, copy bandwidth %.2f GB/s → I/O limit %.2f s",
                        formatBytes(inputBytes), models, formatBytes(outputBytes), bandwidth / 1e9, ioLimit))
        if mergekit == nil && !noPeer { printErr("mergekit-yaml not found (PATH, \(defaultPeer)): peer not measured; build it with ../shared/tools/peer-env.sh") }
        var rows: [[String: Any]] = []
        for method in methods.split(separator: ",").map(String.init) {
            let cfg = root + "/\(method).yml"
            try config(method: method, modelsDir: modelsDir).write(toFile: cfg, atomically: true, encoding: .utf8)
            let out = root + "/out-graft-\(method)"
            try? FileManager.default.removeItem(atPath: out)
            let g = try measure([graft, "merge", cfg, out])
            try? FileManager.default.removeItem(atPath: out)
            var row: [String: Any] = ["method": method, "graft_seconds": g.seconds, "graft_peak_rss_mb": g.peakRSS / 1e6,
                                      "io_limit_seconds": ioLimit]
            var line = String(format: "%-16@ graft %6.2f s  %6.0f MB peak  (I/O limit %.2f s, %.1f× of it)",
                              method as NSString, g.seconds, g.peakRSS / 1e6, ioLimit, g.seconds / ioLimit)
            if let mk = mergekit {
                let mout = root + "/out-mergekit-\(method)"
                try? FileManager.default.removeItem(atPath: mout)
                let m = try measure([mk, cfg, mout, "--allow-crimes", "--lazy-unpickle"], env: ["HF_HUB_OFFLINE": "1"], allowFailure: true)
                try? FileManager.default.removeItem(atPath: mout)
                row["mergekit_seconds"] = m.seconds
                row["mergekit_peak_rss_mb"] = m.peakRSS / 1e6
                row["speedup"] = m.seconds / g.seconds
                line += String(format: " | mergekit %6.2f s  %6.0f MB peak | %.1f× faster, %.1f× less memory",
                               m.seconds, m.peakRSS / 1e6, m.seconds / g.seconds, m.peakRSS / g.peakRSS)
            }
            rows.append(row)
            if !json { print(line) }
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: ["results": rows, "input_bytes": inputBytes, "output_bytes": outputBytes,
                                                                   "copy_bandwidth_gbps": bandwidth / 1e9], options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }

    func config(method: String, modelsDir: String) -> String {
        var s = "merge_method: \(method)\nbase_model: \(modelsDir)/base\ndtype: float32\nmodels:\n"
        for i in 1...models {
            s += "- model: \(modelsDir)/\(SyntheticLlama.name(i))\n  parameters:\n    weight: \(method == "ties" ? "1.0" : String(format: "%.3f", 1.0 / Double(models)))\n"
            if method == "ties" { s += "    density: 0.3\n" }
        }
        return s
    }

    /// File-copy bandwidth (bytes read + written per second) copying one input with read/write
    /// through an 8 MB buffer, page cache warm — what a merge that only moved bytes would take.
    func measureCopyBandwidth(_ path: String, scratch: String) throws -> Double {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 8 << 20, alignment: 4096)
        defer { buf.deallocate() }
        func copyOnce() throws -> (Int, Double) {
            let src = open(path, O_RDONLY), dst = open(scratch, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard src >= 0, dst >= 0 else { throw ValidationError("cannot copy \(path) to \(scratch)") }
            defer { close(src); close(dst); unlink(scratch) }
            let start = Date()
            var total = 0
            while true {
                let r = read(src, buf, 8 << 20)
                if r <= 0 { break }
                var w = 0
                while w < r { let k = write(dst, buf + w, r - w); if k <= 0 { break }; w += k }
                total += r
            }
            return (total, Date().timeIntervalSince(start))
        }
        _ = try copyOnce()  // warm the page cache
        let (bytes, t) = try copyOnce()
        return Double(2 * bytes) / t
    }

    struct Measurement { let seconds: Double; let peakRSS: Double }

    /// Runs a command as a child process; wall time and its peak resident set (wait4's ru_maxrss).
    func measure(_ argv: [String], env: [String: String] = [:], allowFailure: Bool = false) throws -> Measurement {
        var environ = ProcessInfo.processInfo.environment
        for (k, v) in env { environ[k] = v }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environ.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgs.forEach { free($0) }; cEnv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var pid: pid_t = 0
        let start = Date()
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, cEnv)
        guard rc == 0 else { throw ValidationError("cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        var usage = rusage()
        _ = wait4(pid, &status, 0, &usage)
        let seconds = Date().timeIntervalSince(start)
        if status != 0 && !allowFailure {
            throw ValidationError("\(argv.joined(separator: " ")) failed (status \(status)); run it by hand to see why")
        }
        return Measurement(seconds: seconds, peakRSS: Double(usage.ru_maxrss) * 1024)
    }

    func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }
}

/// Float32 checkpoints with SmolLM2-135M's tensor shapes (hidden 576, 9/3 heads of 64, FFN 1536,
/// vocabulary 49,152, tied embeddings): a random base and fine-tunes = base + low-rank + sparse + noise.
enum SyntheticLlama {
    static func name(_ i: Int) -> String { i == 0 ? "base" : "ft\(i)" }

    static func shapes(layers: Int) -> [(String, [Int])] {
        var s: [(String, [Int])] = [("model.embed_tokens.weight", [49152, 576])]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            s += [(p + "self_attn.q_proj.weight", [576, 576]), (p + "self_attn.k_proj.weight", [192, 576]),
                  (p + "self_attn.v_proj.weight", [192, 576]), (p + "self_attn.o_proj.weight", [576, 576]),
                  (p + "mlp.gate_proj.weight", [1536, 576]), (p + "mlp.up_proj.weight", [1536, 576]),
                  (p + "mlp.down_proj.weight", [576, 1536]),
                  (p + "input_layernorm.weight", [576]), (p + "post_attention_layernorm.weight", [576])]
        }
        s.append(("model.norm.weight", [576]))
        return s
    }

    static func config(layers: Int) -> String {
        """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
         "num_hidden_layers": \(layers), "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
         "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 100000.0, "tie_word_embeddings": true,
         "hidden_act": "silu", "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
        """
    }

    static func ensure(at dir: String, fineTunes: Int, layers: Int) throws {
        let shapes = shapes(layers: layers)
        for i in 0...fineTunes {
            let d = dir + "/" + name(i)
            if FileManager.default.fileExists(atPath: d + "/model.safetensors") { continue }
            printErr("generating \(d)")
            let out = try OutputDirectory(d, overwrite: true)
            let w = try ShardedSafetensorsWriter(directory: out.tempPath, specs: shapes.map { TensorSpec(name: $0.0, dtype: .f32, shape: $0.1) },
                                                 maxShardBytes: Int.max)
            for (k, (n, shape)) in shapes.enumerated() {
                let count = shape.reduce(1, *)
                var rng = SeededRNG(seed: UInt64(k), key: n)  // the base: same for every model
                let buf = FloatBuffer(count: count)
                let v = buf.mutable
                let isNorm = shape.count == 1
                for j in 0..<count { v[j] = isNorm ? 1 + 0.1 * (rng.nextUnitFloat() - 0.5) : 0.04 * (rng.nextUnitFloat() - 0.5) }
                if i > 0 {
                    var t = SeededRNG(seed: UInt64(i) << 32 | UInt64(k), key: n)
                    for j in 0..<count {
                        let u = t.nextUnitFloat()
                        v[j] += 0.002 * (u - 0.5) + (u > 0.97 ? 0.01 * (t.nextUnitFloat() - 0.5) : 0)
                    }
                    if shape.count == 2 {  // a rank-4 update
                        let (r, c) = (shape[0], shape[1])
                        let a = (0..<(4 * c)).map { _ in t.nextUnitFloat() - 0.5 }, b = (0..<(r * 4)).map { _ in 0.01 * (t.nextUnitFloat() - 0.5) }
                        let ab = Linalg.matmul(b, a, m: r, k: 4, n: c)
                        for j in 0..<count { v[j] += ab[j] }
                    }
                }
                try w.write(n, tensor: buf.tensor(shape: shape))
            }
            try w.finish()
            try config(layers: layers).write(toFile: out.path("config.json"), atomically: true, encoding: .utf8)
            try out.commit()
        }
    }
}
