import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor
import GraftText
import GraftTraining

/// Peak resident memory of this process so far, in bytes.
func peakRSSBytes() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) * 1024
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "LoRA training tokens/s (forward, backward, AdamW) against PyTorch + PEFT on the same batch when installed.",
        discussion: """
        Examples (the issue's two reference points):
          graft bench train --model smollm2 --task causal-lm --batch 4 --seq 128 --rank 8 --targets q_proj,v_proj
          graft bench train --model minilm --task classification --batch 32 --seq 64 --rank 8 --targets query,value
        Random token ids of exactly --seq tokens (no padding), dropout off, one untimed warm-up step.
        """)

    @Option(help: "Model (folder, .gguf or short name).") var model: String = "minilm"
    @Option(help: "classification | causal-lm.") var task: String = "classification"
    @Option(help: "Sequences per step.") var batch: Int = 32
    @Option(help: "Tokens per sequence.") var seq: Int = 64
    @Option(help: "LoRA rank.") var rank: Int = 8
    @Option(help: "Target modules, comma-separated.") var targets: String = "query,value"
    @Option(help: "Timed optimizer steps.") var steps: Int = 5
    @Option(help: "f32 | bf16: precision of the products with the frozen weights (float32 accumulation either way).") var precision: String = "f32"
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(help: "Skip the peer.") var noPeer = false

    func validate() throws {
        guard batch > 0, seq > 1, rank > 0, steps > 0 else { throw ValidationError("--batch, --seq, --rank and --steps must be positive (--seq ≥ 2)") }
        guard precision == "f32" || precision == "bf16" else { throw ValidationError("--precision must be f32 or bf16") }
        guard TaskKind(rawValue: task) == .classification || TaskKind(rawValue: task) == .causalLM else {
            throw ValidationError("--task must be classification or causal-lm")
        }
    }

    func run() throws {
        let path = try ModelLocator.resolve(model)
        Linalg.useSingleThreadedBLAS()  // as graft train: Graft splits the work over the cores itself
        let kind = TaskKind(rawValue: task)!
        let lora = LoRAConfig(rank: rank, alpha: Double(2 * rank), targetModules: targets.split(separator: ",").map(String.init))
        var rng = SeededRNG(seed: 1)
        let ours: (tps: Double, flopsPerStep: Double)
        var ids: [[Int]] = []
        switch kind {
        case .classification:
            var encoder = try BertModel(checkpoint: try Checkpoint(path: path))
            let v = encoder.vocabularySize, h = encoder.config.hidden
            ids = (0..<batch).map { _ in [101] + (0..<(seq - 2)).map { _ in 1000 + Int(rng.next() % UInt64(v - 1000)) } + [102] }
            encoder.packForTraining(bf16: precision == "bf16")
            var adapter = try TrainableAdapter.attach(to: &encoder, config: lora, peftPrefix: "bert.", seed: 1)
            var head = Linear(weight: FloatBuffer(repeating: 0.01, count: 2 * h), bias: FloatBuffer(repeating: 0, count: 2), inFeatures: h, outFeatures: 2)
            adapter.trainFully(&head, name: "classifier")
            let t = ClassificationTask(model: try BertForSequenceClassification(encoder: encoder, tokenizer: try TokenizerLoader.load(model: path), head: head))
            let ex = ids.enumerated().map { ClassificationTask.Example(ids: $1, label: $0 % 2) }
            let c = encoder.config
            let linear = Double(c.layers * (4 * h * h + 2 * h * c.intermediate))
            ours = (try timeSteps(t, adapter, ex), flops(linearParams: linear, layers: c.layers, hidden: h, head: 0))
        case .causalLM:
            var lm = try CausalLM(path: path)
            let c = lm.model.config
            ids = (0..<batch).map { _ in (0..<seq).map { _ in Int(rng.next() % UInt64(c.vocab)) } }
            if precision == "bf16" { lm.model.enableBF16() }
            let adapter = try TrainableAdapter.attach(to: &lm.model, config: lora, peftPrefix: "", seed: 1)
            let ex = ids.map { x in CausalLMTask.Example(ids: x, targets: (0..<x.count).map { $0 + 1 < x.count ? x[$0 + 1] : nil }) }
            let h = c.hidden, kv = c.kvHeads * c.headDim
            let linear = Double(c.layers * (2 * h * h + 2 * h * kv + 3 * h * c.intermediate))
            ours = (try timeSteps(CausalLMTask(model: lm.model), adapter, ex), flops(linearParams: linear, layers: c.layers, hidden: h, head: Double(c.vocab * h)))
        case .embedding: return
        }
        let gflops = ours.flopsPerStep * ours.tps / Double(batch * seq) / 1e9
        let rss = peakRSSBytes() / 1e6
        var result: [(String, JSONValue)] = [("tokens_per_second", .double(ours.tps.rounded())), ("gflops", .double((gflops * 10).rounded() / 10)),
                                             ("peak_rss_mb", .double(rss.rounded()))]
        // "Effective": the FLOPs of the full computation PyTorch does, over Graft's time (Graft skips some,
        // e.g. the classifier's last layer past the first token, so this can pass the FP32 peak).
        var line = String(format: "graft (\(precision)): %.0f tokens/s, ≈%.0f effective GFLOPS (%.0f%% of the 232 GFLOPS FP32 peak of 2 cores), peak RSS %.0f MB",
                          ours.tps, gflops, gflops / 232 * 100, rss)
        if !noPeer, let r = try runPeer(Self.peerScript, input: ["path": path, "task": task, "ids": ids, "rank": rank, "targets": targets,
                                                                "steps": steps, "autocast": precision == "bf16"]),
           let tps = r["tokens_per_second"] as? Double {
            let prss = (r["peak_rss_mb"] as? Double) ?? .nan
            line += String(format: " | PyTorch+PEFT float32: %.0f tokens/s, peak RSS %.0f MB | %.2f× speed, %.2f× memory", tps, prss, ours.tps / tps, rss / prss)
            result += [("peer_tokens_per_second", .double(tps.rounded())), ("peer_peak_rss_mb", .double(prss.rounded())),
                       ("speedup", .double((ours.tps / tps * 100).rounded() / 100))]
            if let bf = r["autocast_tokens_per_second"] as? Double {
                line += String(format: " | PyTorch bf16 autocast: %.0f tokens/s | %.2f×", bf, ours.tps / bf)
                result += [("peer_autocast_tokens_per_second", .double(bf.rounded())), ("speedup_vs_autocast", .double((ours.tps / bf * 100).rounded() / 100))]
            }
        } else if !noPeer { line += " | PyTorch+PEFT not installed (../shared/tools/peer-env.sh)" }
        print(json ? JSONValue.object(result).serialized() : line)
    }

    /// Approximate FLOPs of one step as PyTorch computes it: forward = 2·(linear weights + head)·tokens + attention 4·t²·h per
    /// sequence and layer; backward with frozen weights = input gradients only (≈ the forward's
    /// linear FLOPs again, attention twice).
    func flops(linearParams: Double, layers: Int, hidden: Int, head: Double) -> Double {
        let tokens = Double(batch * seq)
        let fwdLinear = 2 * (linearParams + head) * tokens
        let fwdAttn = 4 * Double(seq * seq * hidden * layers * batch)
        return 2 * fwdLinear + 3 * fwdAttn
    }

    func timeSteps<T: TrainingTask>(_ task: T, _ adapter: TrainableAdapter, _ examples: [T.Example]) throws -> Double {
        let opt = AdamW(adapter.parameters, weightDecay: 0)
        func step() throws {
            adapter.zeroGrad()
            _ = try task.step(examples, lossScale: 1, rng: nil, backward: true)
            opt.update(lr: 1e-4)
        }
        try step()
        let t0 = Date()
        for _ in 0..<steps { try step() }
        return Double(batch * seq * steps) / Date().timeIntervalSince(t0)
    }

    static let peerScript = """
    import json, sys, time, resource, torch
    from peft import LoraConfig, get_peft_model
    a = json.load(sys.stdin); torch.set_num_threads(2); torch.manual_seed(0)
    ids = torch.tensor(a["ids"]); targets = a["targets"].split(",")
    if a["task"] == "classification":
        from transformers import AutoModelForSequenceClassification
        m = AutoModelForSequenceClassification.from_pretrained(a["path"], num_labels=2)
        cfg = LoraConfig(r=a["rank"], lora_alpha=2 * a["rank"], target_modules=targets, task_type="SEQ_CLS", lora_dropout=0.0)
        labels = torch.arange(ids.shape[0]) % 2
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    else:
        import os
        from transformers import AutoModelForCausalLM
        d, f = os.path.split(a["path"])
        m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
        cfg = LoraConfig(r=a["rank"], lora_alpha=2 * a["rank"], target_modules=targets, task_type="CAUSAL_LM", lora_dropout=0.0)
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
    m = get_peft_model(m, cfg); m.eval()  # dropout off on both sides (Graft trains without the base model's dropout)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    def step(autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = m(**batch).loss
        loss.backward(); opt.step(); opt.zero_grad()
    def measure(autocast):
        step(autocast)
        t = time.time()
        for _ in range(a["steps"]): step(autocast)
        return ids.numel() * a["steps"] / (time.time() - t)
    out = {"tokens_per_second": measure(False), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if a["autocast"]: out["autocast_tokens_per_second"] = measure(True)  # the same bf16 products Graft's bf16 does
    print(json.dumps(out))
    """
}

struct BenchGemm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "Products over packed frozen weights — bf16 (AVX512-BF16) and float32 — against OpenBLAS SGEMM on the model shapes, in GFLOPS.",
        discussion: """
        float32 runs twice: the classical kernel, and one level of Strassen's algorithm (k and n even), \
        whose rate is the effective one, 2·m·k·n over its time, though it does 7/8 of those operations.
        """)

    @Option(help: "Shapes m×k×n, comma-separated.") var shapes: String = "2048x384x384,2048x384x1536,2048x1536x384,512x576x576,512x576x1536,512x1536x576,64x576x49152,64x49152x576"

    func run() throws {
        Linalg.useSingleThreadedBLAS()
        print("bf16 on this CPU: \(BF16Matrix.hardwareAccelerated ? "AVX512-BF16" : "portable fallback")")
        for spec in shapes.split(separator: ",") {
            let d = spec.split(separator: "x").compactMap { Int($0) }
            guard d.count == 3, d.allSatisfy({ $0 > 0 }) else { throw ValidationError("bad shape '\(spec)' (use m×k×n as 2048x384x384)") }
            let (m, k, n) = (d[0], d[1], d[2])
            // Eight inputs and outputs in turn, as a model's products see fresh activations (one A and C
            // reused would stay in cache and flatter every kernel).
            var rng = SeededRNG(seed: 3)
            func random(_ count: Int) -> FloatBuffer { FloatBuffer((0..<count).map { _ in rng.nextUnitFloat() - 0.5 }) }
            let inputs = (0..<8).map { _ in random(m * k) }, outputs = (0..<8).map { _ in random(m * n) }
            let b = random(k * n)
            let mat = BF16Matrix(b.values.baseAddress!, k: k, n: n, transposed: false)
            let reps = max(2, 100_000_000_000 / (2 * m * n * k))  // about half a second per measurement
            func time(_ f: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> Double {
                f(inputs[0].values.baseAddress!, outputs[0].mutable.baseAddress!)
                let t0 = Date()
                for r in 0..<reps { f(inputs[r % 8].values.baseAddress!, outputs[r % 8].mutable.baseAddress!) }
                return 2 * Double(m * n * k) * Double(reps) / Date().timeIntervalSince(t0) / 1e9
            }
            let packed = F32Matrix(b.values.baseAddress!, k: k, n: n, transposed: false, algorithm: .classical)
            let strassen = k % 2 == 0 && n % 2 == 0 ? F32Matrix(b.values.baseAddress!, k: k, n: n, transposed: false, algorithm: .strassen) : nil
            // The portable bf16 fallback runs at a few GFLOPS: measured only where the CPU has AVX512-BF16.
            let bf = BF16Matrix.hardwareAccelerated ? time { a, c in mat.multiply(a, m: m, into: c) } : .nan
            let pf = time { a, c in packed.multiply(a, m: m, into: c) }
            let sf = strassen.map { s in time { a, c in s.multiply(a, m: m, into: c) } }
            // SGEMM split over the cores by columns, as the bf16 product is (and as training runs it).
            let f32 = time { a, c in Linalg.gemmParallel(m: m, n: n, k: k, a: a, b: b.values.baseAddress!, c: c) }
            let st = sf.map { String(format: "  f32 Strassen %4.0f (%.2f×)", $0, $0 / f32) } ?? ""
            print(String(format: "%6d×%6d×%6d  bf16 %4.0f GFLOPS (%.2f×)  f32 packed %4.0f (%.2f×)%@  f32 BLAS %4.0f",
                         m, k, n, bf, bf / f32, pf, pf / f32, st, f32))
        }
    }
}
