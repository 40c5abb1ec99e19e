import ArgumentParser
import Foundation
import GraftAdapters
import GraftBench
import GraftFormats
import GraftTensor
import GraftTraining

/// `graft bench …`: each subcommand sets a benchmark's options, runs it (GraftBench) and prints it.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks against the peers, measured in the same run.",
        discussion: "graft bench all runs every one of them and prints one table; the others run one benchmark each.",
        subcommands: [BenchAll.self, BenchMerge.self, BenchEmbed.self, BenchGenerate.self, BenchTrain.self, BenchGemm.self, BenchServe.self, BenchRoute.self])
}

/// The path of this graft executable (the merge benchmark runs it as a child process).
private var graftExecutable: String { URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path }

private var defaultMergeDir: String {
    GraftHome.path + "/bench/merge"
}

struct BenchAll: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Every benchmark against its peer in one run, as one table: the CPU, the kernel choices, and each row's ratio against its target.",
        discussion: """
        Rows: LoRA training on MiniLM (B32 T64) and SmolLM2 (B4 T128) against PyTorch + PEFT, with their peak \
        memory; MiniLM embeddings against sentence-transformers; SmolLM2 512-token prefill and decode against \
        llama.cpp, alone and again with a second process keeping one core busy (sharing the cores); TIES and \
        task arithmetic merges against mergekit, with their peak memory. The table is Markdown, ready for \
        BENCHMARKS.md. With the peers installed (../shared/tools/peer-env.sh) about 6 minutes on 2 cores, more \
        the first time, which writes the merge inputs; without them, Graft's figures alone. Run it on a quiet machine: another load changes every figure.

        Examples:
          graft bench all
          graft bench all --only embed,generate
          graft bench all --quick --no-peer        (a check that everything runs: not figures to keep)
        """)

    @Option(help: ArgumentHelp("Groups to run, comma-separated: \(BenchSuite.Group.allCases.map(\.rawValue).joined(separator: ", ")).",
                               valueName: "groups"))
    var only: String?
    @Option(help: "auto | f32 | bf16: precision of training's products with the frozen weights (auto: as graft train picks it on this CPU).")
    var precision: String = "auto"
    @Flag(help: "Shorter runs (fewer steps, layers and tokens): checks that everything runs.") var quick = false
    @Flag(help: "Skip the peers.") var noPeer = false
    @Flag(help: "Print one JSON object instead of the table.") var json = false

    func run() throws {
        var suite = BenchSuite(graft: graftExecutable, mergeDir: defaultMergeDir + (quick ? "-quick" : ""))
        if let only {
            let chosen = try Set(only.split(separator: ",").map { name in
                guard let g = BenchSuite.Group(rawValue: String(name)) else {
                    throw ValidationError("--only: unknown group '\(name)' (groups: \(BenchSuite.Group.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                return g
            })
            suite.groups = BenchSuite.Group.allCases.filter(chosen.contains)  // the suite's order, whatever the option's
        }
        suite.bf16 = try usesBF16(precision: precision)
        suite.peer = !noPeer; suite.quick = quick
        let cpu = CPUInfo.current
        let choices = TuningCache.describe(KernelChoices.active)
        let date = ISO8601DateFormatter().string(from: Date())
        var rows: [BenchSuite.Row] = []
        if !json {
            print("CPU: \(cpu.summary), \(graftThreadCount) threads — \(date)")
            print("BLAS: \(BLASCore.name); kernels: \(choices.joined(separator: "; "))")
            if quick { print("quick run: shortened benchmarks, not figures to keep") }
            print("")
            print("| benchmark | graft | peer | ratio | target | met |")
            print("|---|---|---|---|---|---|")
        }
        try suite.run(log: { printErr($0) }) { r in
            rows.append(r)
            if !json {
                print("| \(r.name) | \(r.graft) | \(r.peer ?? "—") | \(r.ratio.map { String(format: "%.2f×", $0) } ?? "—") | \(r.target.text) | \(r.met.map { $0 ? "yes" : "**no**" } ?? "—") |")
            }
        }
        if json {
            let obj = JSONValue.object([
                ("cpu", .string(cpu.modelName)), ("cpu_summary", .string(cpu.summary)), ("date", .string(date)),
                ("blas_core", .string(BLASCore.name)), ("kernel_choices", .object(TuningCache.fields(KernelChoices.active))),
                ("quick", .bool(quick)),
                ("rows", .array(rows.map { r in
                    .object([("group", .string(r.group.rawValue)), ("name", .string(r.name)), ("graft", .string(r.graft)),
                             ("peer", r.peer.map { .string($0) } ?? .null), ("ratio", r.ratio.map { .double($0) } ?? .null),
                             ("target", .string(r.target.text)), ("met", r.met.map { .bool($0) } ?? .null)])
                })),
            ])
            print(obj.serialized(pretty: true))
        } else {
            let missed = rows.filter { $0.met == false }.count
            print("\n\(rows.count) rows, \(rows.filter { $0.met == true }.count) on target, \(missed) below" +
                  (rows.contains { $0.ratio == nil } ? ", the rest without a peer" : "") + ". `make demo` (target < 15 min) is timed on its own.")
        }
    }
}

struct BenchMerge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Time and peak memory of graft merge (and mergekit, when on PATH) on SmolLM2-135M-shaped fine-tunes.",
        discussion: """
        Generates (once, with Graft's own writer) a base and four fine-tunes with SmolLM2-135M's tensor shapes in float32 (≈ 538 MB each), then runs `graft merge` for ties (density 0.3) and task_arithmetic as child processes, reporting wall time, peak RSS and the I/O limit (bytes read + written over the measured file-copy bandwidth).

        When mergekit is installed — `mergekit-yaml` on PATH, or the environment ../shared/tools/peer-env.sh builds in /tmp/graft-peers — it runs on the same inputs in the same run and the ratios are printed.
        """)

    @Option(help: "Working folder for the generated models and outputs (default: $GRAFT_HOME/bench/merge).") var dir: String?
    @Option(help: "Number of fine-tunes.") var models: Int = 4
    @Option(help: "Number of transformer layers (30 as in SmolLM2-135M; fewer for a quick run).") var layers: Int = 30
    @Option(help: "Methods to run, comma-separated.") var methods: String = "ties,task_arithmetic"
    @Flag(help: "Skip mergekit even if it is installed.") var noPeer = false
    @Flag(help: "Print the results as JSON.") var json = false

    func run() throws {
        guard models > 0, layers > 0 else { throw ValidationError("--models and --layers must be positive") }
        var b = MergeBenchmark(dir: dir ?? defaultMergeDir)
        b.models = models; b.layers = layers; b.methods = methods.split(separator: ",").map(String.init); b.peer = !noPeer
        let r = try b.run(graft: graftExecutable, log: { printErr($0) })
        printErr(String(format: "inputs %@ (base + %d), output %@, copy bandwidth %.2f GB/s → I/O limit %.2f s",
                        formatBytes(r.inputBytes), models, formatBytes(r.outputBytes), r.copyBandwidth / 1e9, r.rows.first?.ioLimitSeconds ?? 0))
        if json {
            let rows: [JSONValue] = r.rows.map { m in
                var f: [(String, JSONValue)] = [("method", .string(m.method)), ("graft_seconds", .double(m.graft.seconds)),
                                                ("graft_peak_rss_mb", .double(m.graft.peakRSS / 1e6)), ("io_limit_seconds", .double(m.ioLimitSeconds))]
                if let mk = m.mergekit, let s = m.speedup {
                    f += [("mergekit_seconds", .double(mk.seconds)), ("mergekit_peak_rss_mb", .double(mk.peakRSS / 1e6)), ("speedup", .double(s))]
                }
                return .object(f)
            }
            print(JSONValue.object([("results", .array(rows)), ("input_bytes", .int(Int64(r.inputBytes))), ("output_bytes", .int(Int64(r.outputBytes))),
                                    ("copy_bandwidth_gbps", .double(r.copyBandwidth / 1e9))]).serialized(pretty: true))
            return
        }
        for m in r.rows {
            var line = String(format: "%-16@ graft %6.2f s  %6.0f MB peak  (I/O limit %.2f s, %.1f× of it)",
                              m.method as NSString, m.graft.seconds, m.graft.peakRSS / 1e6, m.ioLimitSeconds, m.graft.seconds / m.ioLimitSeconds)
            if let mk = m.mergekit {
                line += String(format: " | mergekit %6.2f s  %6.0f MB peak | %.1f× faster, %.1f× less memory",
                               mk.seconds, mk.peakRSS / 1e6, mk.seconds / m.graft.seconds, mk.peakRSS / m.graft.peakRSS)
            }
            print(line)
        }
    }
}

struct BenchEmbed: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Sentence embeddings per second on all-MiniLM-L6-v2 (batch 32 × 64 tokens), against sentence-transformers when installed.",
        discussion: """
        Both sides embed the same 32 distinct texts (tokenization included) once to warm up, then take \
        turns, one batch each, so that both see the machine in the same state (its speed drifts by \
        ±15 % over minutes). Each rate comes from its median batch time, so a moment of interference \
        from other work does not decide the result. The peer runs PyTorch with 2 threads in its own \
        process, which waits for its turn.
        """)

    @Option(help: "Model (folder or short name).") var model: String = "minilm"
    @Option(help: "Sentences per batch.") var batch: Int = 32
    @Option(help: "Tokens per sentence, [CLS] and [SEP] included.") var tokens: Int = 64
    @Option(help: "Timed batches.") var iterations: Int = 20
    @Flag(help: "Skip the peer.") var noPeer = false
    @Flag(help: "Graft multiplies in bf16 (graft embed --bf16).") var bf16 = false
    @Flag(help: ArgumentHelp("Also time float32 products in the classical order (no Strassen), batches alternating with the default's in one process.",
                             discussion: "Alternation makes the two comparable: this machine's speed drifts between runs by more than their difference."))
    var compareClassical = false

    func run() throws {
        var b = EmbedBenchmark()
        b.model = model; b.batch = batch; b.tokens = tokens; b.iterations = iterations
        b.peer = !noPeer; b.bf16 = bf16; b.compareClassical = compareClassical
        let r = try b.run(log: { printErr($0) })
        var line = String(format: "graft%@: %.0f sentences/s (%.0f tokens/s)", bf16 ? " (bf16)" : "", r.sentencesPerSecond, r.sentencesPerSecond * Double(tokens))
        if let c = r.classicalSentencesPerSecond {
            line += String(format: " | float32 classical products: %.0f sentences/s (default %.3f× that)", c, r.sentencesPerSecond / c)
        }
        if let st = r.peerSentencesPerSecond, let ratio = r.ratio {
            line += String(format: " | sentence-transformers: %.0f sentences/s | %.2f×", st, ratio)
        }
        print(line)
    }
}

struct BenchGenerate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "SmolLM2 prefill and decode tokens/s, against llama.cpp (llama-cpp-python, 2 threads) on the same GGUF when installed.")

    @Option(help: "GGUF model (file or short name).") var model: String = "smollm2"
    @Option(help: "Prompt tokens for the prefill measurement.") var prompt: Int = 512
    @Option(help: "Tokens decoded one at a time.") var decode: Int = 128
    @Flag(help: "Keep one core busy with a second process while measuring (sharing the cores).") var busy = false
    @Flag(help: "Skip the peer.") var noPeer = false

    func run() throws {
        var b = GenerateBenchmark()
        b.model = model; b.prompt = prompt; b.decode = decode; b.peer = !noPeer
        let neighbour = busy ? try BusyNeighbour() : nil
        defer { neighbour?.stop() }
        let r = try b.run(log: { printErr($0) })
        var line = String(format: "graft: prefill %.0f tok/s (%d tokens), decode %.1f tok/s (%d tokens; %.1f with --int8-decode)",
                          r.prefill, prompt, r.decode, decode, r.decodeInt8)
        if let pp = r.peerPrefill, let dd = r.peerDecode {
            line += String(format: "\nllama.cpp: prefill %.0f tok/s, decode %.1f tok/s | graft/llama.cpp: prefill %.2f×, decode %.2f× (%.2f× with --int8-decode)",
                           pp, dd, r.prefill / pp, r.decode / dd, r.decodeInt8 / dd)
        }
        print(line)
    }
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Adapter training tokens/s (forward, backward, AdamW) against PyTorch + PEFT on the same batch when installed.",
        discussion: """
        Examples (the issue's two reference points):
          graft bench train --model smollm2 --task causal-lm --batch 4 --seq 128 --rank 8 --targets q_proj,v_proj
          graft bench train --model minilm --task classification --batch 32 --seq 64 --rank 8 --targets query,value
          graft bench train --method ia3                      # PEFT's IA³ targets for the model on both sides
        Random token ids of exactly --seq tokens (no padding), dropout off, one untimed warm-up step.
        """)

    @Option(help: "Model (folder, .gguf or short name).") var model: String = "minilm"
    @Option(help: "classification | causal-lm.") var task: String = "classification"
    @Option(help: "Sequences per step.") var batch: Int = 32
    @Option(help: "Tokens per sequence.") var seq: Int = 64
    @Option(help: "Adapter method: \(AdapterMethods.all.map(\.name).joined(separator: ", ")) (the same on the peer's side).") var method: String = "lora"
    @Option(help: "lora, dora, corda, vera, nola: rank; adalora: initial rank (allocated down to half); increlora, triadaptlora: the rank grown to.") var rank: Int = 8
    @Option(help: "Target modules, comma-separated (default: the method's for the model, PEFT's — query,value for LoRA on BERT).") var targets: String?
    @Option(help: "Timed optimizer steps.") var steps: Int = 5
    @Option(help: "auto | f32 | bf16: precision of the products with the frozen weights, float32 sums either way (auto: as graft train picks it on this CPU).")
    var precision: String = "auto"
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(help: "Skip the peer.") var noPeer = false

    func run() throws {
        var b = TrainBenchmark()
        guard let kind = TaskKind(rawValue: task) else { throw ValidationError("--task must be classification or causal-lm") }
        b.model = model; b.task = kind; b.batch = batch; b.seq = seq; b.rank = rank
        b.method = method
        b.targets = targets.map { $0.split(separator: ",").map(String.init) }; b.steps = steps; b.peer = !noPeer
        b.bf16 = try usesBF16(precision: precision)
        let r = try b.run(log: { printErr($0) })
        let name = b.bf16 ? "bf16" : "f32"
        if json {
            var f: [(String, JSONValue)] = [("precision", .string(name)), ("tokens_per_second", .double(r.tokensPerSecond.rounded())),
                                            ("gflops", .double((r.effectiveGFLOPS * 10).rounded() / 10)), ("peak_rss_mb", .double(r.peakRSSMB.rounded()))]
            if let p = r.peerTokensPerSecond, let s = r.ratio {
                f += [("peer_tokens_per_second", .double(p.rounded())), ("peer_peak_rss_mb", .double((r.peerPeakRSSMB ?? .nan).rounded())),
                      ("speedup", .double((s * 100).rounded() / 100))]
            }
            if let a = r.peerAutocastTokensPerSecond {
                f += [("peer_autocast_tokens_per_second", .double(a.rounded())), ("speedup_vs_autocast", .double((r.tokensPerSecond / a * 100).rounded() / 100))]
            }
            print(JSONValue.object(f).serialized())
            return
        }
        var line = String(format: "graft (\(name)): %.0f tokens/s, ≈%.0f effective GFLOPS, peak RSS %.0f MB", r.tokensPerSecond, r.effectiveGFLOPS, r.peakRSSMB)
        if let p = r.peerTokensPerSecond, let s = r.ratio {
            line += String(format: " | \(r.peerName) float32: %.0f tokens/s, peak RSS %.0f MB | %.2f× speed, %.2f× memory", p, r.peerPeakRSSMB ?? .nan, s, r.memoryRatio ?? .nan)
        }
        if let a = r.peerAutocastTokensPerSecond {
            line += String(format: " | PyTorch bf16 autocast: %.0f tokens/s | %.2f×", a, r.tokensPerSecond / a)
        }
        print(line)
    }
}

struct BenchGemm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "Products over packed frozen weights — bf16 (AVX512-BF16) and float32 — against OpenBLAS SGEMM on the model shapes, in GFLOPS.",
        discussion: """
        float32 runs twice: the classical kernel, and one level of Strassen's algorithm (k and n even), \
        whose rate is the effective one, 2·m·k·n over its time, though it does 7/8 of those operations. \
        SGEMM is split over the cores by columns, as training runs it.
        """)

    @Option(help: "Shapes m×k×n, comma-separated.") var shapes: String = "2048x384x384,2048x384x1536,2048x1536x384,512x576x576,512x576x1536,512x1536x576,64x576x49152,64x49152x576"

    func run() throws {
        var b = GemmBenchmark()
        b.shapes = try shapes.split(separator: ",").map { spec in
            let d = spec.split(separator: "x").compactMap { Int($0) }
            guard d.count == 3, d.allSatisfy({ $0 > 0 }) else { throw ValidationError("bad shape '\(spec)' (use m×k×n as 2048x384x384)") }
            return (d[0], d[1], d[2])
        }
        print("bf16 on this CPU: \(BF16Matrix.hardwareAccelerated ? "AVX512-BF16" : "portable fallback (not measured)")")
        for r in b.run() {
            let bf = r.bf16.map { String(format: "  bf16 %4.0f GFLOPS (%.2f×)", $0, $0 / r.blas) } ?? ""
            let st = r.strassen.map { String(format: "  f32 Strassen %4.0f (%.2f×)", $0, $0 / r.blas) } ?? ""
            print(String(format: "%6d×%6d×%6d%@  f32 packed %4.0f (%.2f×)%@  f32 BLAS %4.0f", r.m, r.k, r.n, bf, r.packed, r.packed / r.blas, st, r.blas))
        }
    }
}

struct BenchServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "graft serve under load: output tokens/s and time to first token with 1, 8 and 32 distinct LoRA adapters in the mix, against llama.cpp's server (base model, 2 threads) when installed.",
        discussion: """
        Starts graft serve on SmolLM2 with synthetic rank-8 LoRA adapters, then clients on threads of this
        process send streamed completions (--max-tokens each, past end-of-sequence) over loopback, the
        adapters in turn. The target: 32 adapters ≥ 0.8× the single adapter's throughput; one adapter
        ≥ 1.0× llama.cpp's server; 8 distinct adapters at concurrency 8 ≥ 3× llama.cpp's server.
        """)

    @Option(help: "GGUF model (file or short name).") var model = "smollm2"
    @Option(parsing: .upToNextOption, help: "Concurrent clients (several values: one run each).") var concurrency: [Int] = [1, 8, 32]
    @Option(parsing: .upToNextOption, help: "Distinct adapters in the mix (several values).") var adapters: [Int] = [1, 8, 32]
    @Option(help: "Completion tokens per request.") var maxTokens = 64
    @Option(help: "Requests per client in each run (at least 8 in all).") var requestsPerClient = 2
    @Flag(help: "Skip the peer.") var noPeer = false

    func validate() throws {
        if concurrency.contains(where: { $0 < 1 }) || adapters.contains(where: { $0 < 1 }) { throw ValidationError("--concurrency and --adapters take values ≥ 1") }
        if maxTokens < 1 || requestsPerClient < 1 { throw ValidationError("--max-tokens and --requests-per-client must be at least 1") }
    }

    func run() throws {
        var b = ServeBenchmark(graft: graftExecutable, workDir: GraftHome.path + "/bench/serve")
        b.model = model; b.concurrency = concurrency; b.adapterCounts = adapters; b.maxTokens = maxTokens
        b.requestsPerClient = requestsPerClient; b.peer = !noPeer
        var rows: [ServeBenchmark.Row] = []
        print("server      adapters  clients  output tok/s  TTFT p50  TTFT p99")
        try b.run(log: { printErr($0) }) { r in
            rows.append(r)
            print(String(format: "%-10@  %8@  %7d  %12.1f  %7.3fs  %7.3fs", r.server, r.adapters == 0 ? "base" : String(r.adapters), r.concurrency,
                         r.tokensPerSecond, r.ttftP50, r.ttftP99))
        }
        func rate(_ server: String, _ n: Int, _ c: Int) -> Double? { rows.first { $0.server == server && $0.adapters == n && $0.concurrency == c }?.tokensPerSecond }
        for c in concurrency {
            if let one = rate("graft", 1, c), let many = rate("graft", adapters.max() ?? 1, c), adapters.max() ?? 1 > 1 {
                print(String(format: "concurrency %d: %d adapters / 1 adapter = %.2f× (target ≥ 0.8×)", c, adapters.max() ?? 1, many / one))
            }
            if let peer = rate("llama.cpp", 0, c) {
                if let one = rate("graft", 1, c) { print(String(format: "concurrency %d: graft 1 adapter / llama.cpp base = %.2f× (target ≥ 1.0×)", c, one / peer)) }
                if let eight = rate("graft", 8, c), c == 8 { print(String(format: "concurrency 8: graft 8 adapters / llama.cpp = %.2f× (target ≥ 3×)", eight / peer)) }
            }
        }
    }
}

struct BenchRoute: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route",
        abstract: "Routing among task adapters on SmolLM2: accuracy of each task's own adapter, the base, Arrow, PHATGOOSE and a uniform mixture.",
        discussion: """
        Trains a LoRA adapter (graft train --task causal-lm) and its PHATGOOSE gates (graft gate) on each of
        four demo corpora made into answer-in-words tasks — sentiment (positive/negative), BBC topic
        (business, entertainment, politics, sport, technology), hedging (certain/uncertain), Dutch sentiment
        (positief/negatief) — then answers each task's test texts with its own adapter, the base model, Arrow
        and PHATGOOSE routing among the four, and all four mixed at 1/4 each. Prompts are the text and
        "Answer:", never the task; a configuration's answer is the task's candidate word whose first token it
        ranks highest. All five configurations run as rows of one batched pass, as graft serve batches mixed
        requests. Needs scripts/fetch-data; adapters are kept in $GRAFT_HOME/bench/route and reused.
        """)

    @Option(help: "GGUF model (file or short name).") var model = RouteBenchmark(workDir: "").model
    @Option(help: "Training examples per task.") var trainExamples = RouteBenchmark(workDir: "").trainExamples
    @Option(help: "Test examples per task.") var testExamples = RouteBenchmark(workDir: "").testExamples
    @Option(help: "Training epochs of each adapter.") var epochs = RouteBenchmark(workDir: "").trainer.epochs
    @Option(help: "Steps of each adapter's PHATGOOSE gate training.") var gateSteps = RouteBenchmark(workDir: "").gateSteps
    @Flag(help: "Train the adapters and gates again even when they are there.") var retrain = false

    func validate() throws {
        if gateSteps < 1 { throw ValidationError("--gate-steps must be at least 1") }
        if trainExamples < 8 || testExamples < 1 || epochs < 1 { throw ValidationError("--train-examples ≥ 8, --test-examples ≥ 1, --epochs ≥ 1") }
    }

    func run() throws {
        var b = RouteBenchmark(workDir: GraftHome.path + "/bench/route")
        b.model = model; b.trainExamples = trainExamples; b.testExamples = testExamples; b.trainer.epochs = epochs; b.retrain = retrain
        b.gateSteps = gateSteps
        let bar = TrainProgress()
        let rows = try b.run(log: { printErr($0) }, onEvent: bar.handle)
        let head = ["task", "examples"] + RouteBenchmark.configurations
        print("| " + head.joined(separator: " | ") + " |")
        print("|" + String(repeating: "---|", count: head.count))
        for r in rows {
            print("| \(r.task) | \(r.examples) | " + r.accuracy.map { String(format: "%.1f", $0 * 100) }.joined(separator: " | ") + " |")
        }
        let mean = RouteBenchmark.configurations.indices.map { c in rows.map { $0.accuracy[c] }.reduce(0, +) / Double(max(1, rows.count)) }
        print("| mean | \(rows.map(\.examples).reduce(0, +)) | " + mean.map { String(format: "%.1f", $0 * 100) }.joined(separator: " | ") + " |")
    }
}
