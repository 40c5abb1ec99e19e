import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor
import GraftText
import GraftTraining

/// Adapter training tokens/s (forward, backward, AdamW) against PyTorch + PEFT on the same batch, for any
/// method both have (LoRA, DoRA, AdaLoRA, IA³, VeRA, prompt and prefix tuning, full fine-tuning): random token ids of exactly `seq` tokens (no padding), dropout off,
/// one untimed warm-up step each.
public struct TrainBenchmark: Sendable {
    public var model = "minilm"
    public var task: TaskKind = .classification
    public var batch = 32
    public var seq = 64
    /// The adapter method (`AdapterMethods`), with the same settings on both sides.
    public var method = "lora"
    public var rank = 8
    /// Target modules; nil: the method's defaults for the model (PEFT's).
    public var targets: [String]? = ["query", "value"]
    public var steps = 5
    /// bf16 products with the frozen weights (float32 sums); the peer then also runs bf16 autocast.
    public var bf16 = false
    public var peer = true

    public init() {}

    /// The two reference shapes.
    public static var miniLM: TrainBenchmark { TrainBenchmark() }
    public static var smolLM2: TrainBenchmark {
        var b = TrainBenchmark()
        b.model = "smollm2"; b.task = .causalLM; b.batch = 4; b.seq = 128; b.targets = ["q_proj", "v_proj"]
        return b
    }

    public struct Result: Sendable {
        public let tokensPerSecond: Double
        /// The FLOPs of the full computation PyTorch does, over Graft's time (Graft skips some, e.g. the
        /// classifier's last layer past the first token, so this can pass the FP32 peak).
        public let effectiveGFLOPS: Double
        public let peakRSSMB: Double
        public let peerTokensPerSecond: Double?, peerPeakRSSMB: Double?, peerAutocastTokensPerSecond: Double?
        /// Who the peer was: PyTorch + PEFT, or AdapterHub for bottleneck adapters.
        public var peerName = "PyTorch+PEFT"
        public var ratio: Double? { peerTokensPerSecond.map { tokensPerSecond / $0 } }
        public var memoryRatio: Double? { peerPeakRSSMB.map { peakRSSMB / $0 } }
    }

    public func run(log: (String) -> Void) throws -> Result {
        guard batch > 0, seq > 1, rank > 0, steps > 0 else { throw BenchError("--batch, --seq, --rank and --steps must be positive (--seq ≥ 2)") }
        guard task == .classification || task == .causalLM else { throw BenchError("--task must be classification or causal-lm") }
        let path = try ModelLocator.resolve(model)
        Linalg.useSingleThreadedBLAS()  // as graft train: Graft splits the work over the cores itself
        let info = try AdapterMethods.named(method)
        // --rank is the method's rank where it has one; AdaLoRA's initial rank, halved by its allocation.
        var values: [String: String] = [:]
        if info.options.contains(where: { $0.name == "rank" }) { values["rank"] = "\(rank)" }
        // AdaLoRA prunes from it to half; the growing methods grow to it from their initial rank.
        if method == "adalora" { values["init-rank"] = "\(rank)"; values["target-rank"] = "\(max(1, rank / 2))" }
        else if info.options.contains(where: { $0.name == "target-rank" }) { values["target-rank"] = "\(rank)" }
        // IncreLoRA: every module may grow at each step, so the budget fits the few timed steps.
        if info.options.contains(where: { $0.name == "top-modules" }) { values["top-modules"] = "1024"; values["tinit"] = "0"; values["delta-t"] = "1" }
        let recipe = try info.recipe(MethodSettings(targets: targets.map { ModuleTargets(names: $0) }, llama: task == .causalLM, values: values))
        var rng = SeededRNG(seed: 1)
        let tps: Double, flopsPerStep: Double
        var ids: [[Int]] = []
        if task == .classification {
            var encoder = try BertModel(checkpoint: try Checkpoint(path: path))
            let v = encoder.vocabularySize, h = encoder.config.hidden
            ids = (0..<batch).map { _ in [101] + (0..<(seq - 2)).map { _ in 1000 + Int(rng.next() % UInt64(v - 1000)) } + [102] }
            encoder.packForTraining(bf16: bf16)
            let sample = ids
            var adapter = try TrainableAdapter.attach(to: &encoder, recipe: recipe, peftPrefix: "bert.", seed: 1,
                                                      calibrate: { m, n in for x in sample.prefix(n) { _ = try m.forwardTraining([x], rng: nil) } })
            var head = Linear(weight: FloatBuffer(repeating: 0.01, count: 2 * h), bias: FloatBuffer(repeating: 0, count: 2), inFeatures: h, outFeatures: 2)
            adapter.trainFully(&head, name: "classifier")
            let t = ClassificationTask(model: try BertForSequenceClassification(encoder: encoder, tokenizer: try TokenizerLoader.load(model: path), head: head))
            let ex = ids.enumerated().map { ClassificationTask.Example(ids: $1, label: $0 % 2) }
            let c = encoder.config
            let linear = Double(c.layers * (4 * h * h + 2 * h * c.intermediate))
            tps = try timeSteps(t, adapter, ex)
            flopsPerStep = flops(linearParams: linear, layers: c.layers, hidden: h, head: 0)
        } else {
            var lm = try CausalLM(path: path)
            let c = lm.model.config
            ids = (0..<batch).map { _ in (0..<seq).map { _ in Int(rng.next() % UInt64(c.vocab)) } }
            if bf16 { lm.model.enableBF16() }
            let sample = ids
            let adapter = try TrainableAdapter.attach(to: &lm.model, recipe: recipe, peftPrefix: "", seed: 1,
                                                      calibrate: { m, n in for x in sample.prefix(n) { var c = m.makeCache(); _ = try m.forward(x, cache: &c) } })
            let ex = ids.map { x in CausalLMTask.Example(ids: x, targets: (0..<x.count).map { $0 + 1 < x.count ? x[$0 + 1] : nil }) }
            let h = c.hidden, kv = c.kvHeads * c.headDim
            let linear = Double(c.layers * (2 * h * h + 2 * h * kv + 3 * h * c.intermediate))
            tps = try timeSteps(CausalLMTask(model: lm.model), adapter, ex)
            flopsPerStep = flops(linearParams: linear, layers: c.layers, hidden: h, head: Double(c.vocab * h))
        }
        let gflops = flopsPerStep * tps / Double(batch * seq) / 1e9
        let rss = peakRSSBytes() / 1e6
        var peerTPS: Double?, peerRSS: Double?, autocast: Double?
        if peer, let bottleneck = recipe as? BottleneckConfig {
            // AdapterHub's own environment: the same configuration, the same loop.
            if let py = Peers.adapterHubPython {
                if let r = try Peers.run(Self.adapterHubScript, input: ["path": path, "task": task.rawValue, "ids": ids, "kind": bottleneck.kind.rawValue,
                                                                       "reduction_factor": bottleneck.reductionFactor, "steps": steps], python: py, log: log) {
                    peerTPS = r["tokens_per_second"] as? Double; peerRSS = r["peak_rss_mb"] as? Double
                }
            } else {
                log("AdapterHub's environment not installed (PEER_ADAPTERHUB=1 ../shared/tools/peer-env.sh): peer not measured")
            }
        } else if peer && !Self.peerMethods.contains(method) {
            log("PyTorch + PEFT has no \(method): peer not measured")
        } else if peer {
            if let r = try Peers.run(Self.peerScript, input: ["path": path, "task": task.rawValue, "ids": ids, "rank": rank, "method": method,
                                                             "targets": recipe.targets.names.joined(separator: ","),
                                                             "feedforward": ((recipe as? IA3Config)?.feedforward ?? []).joined(separator: ","),
                                                             "virtual_tokens": recipe.reservedPositions,
                                                             "steps": steps, "autocast": bf16], log: log) {
                peerTPS = r["tokens_per_second"] as? Double; peerRSS = r["peak_rss_mb"] as? Double
                autocast = r["autocast_tokens_per_second"] as? Double
            } else if Peers.python == nil {
                log("PyTorch + PEFT not installed (../shared/tools/peer-env.sh): peer not measured")
            }
        }
        var result = Result(tokensPerSecond: tps, effectiveGFLOPS: gflops, peakRSSMB: rss, peerTokensPerSecond: peerTPS, peerPeakRSSMB: peerRSS,
                            peerAutocastTokensPerSecond: autocast)
        if recipe is BottleneckConfig { result.peerName = "AdapterHub" }
        return result
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
        // What the method adds to each step (AdaLoRA's regulariser and allocation), as graft train runs it.
        let hook = try adapter.recipe.makeTrainingHook(modules: adapter.modules.map { ($0.path, $0.update) }, totalSteps: steps + 1, seed: 1)
        var t = 0
        func step() throws {
            adapter.zeroGrad()
            _ = try task.step(examples, lossScale: 1, rng: nil, backward: true)
            _ = hook?.beforeOptimizerStep()
            opt.update(lr: 1e-4)
            hook?.afterOptimizerStep(t)
            t += 1
        }
        try step()
        let t0 = monotonicSeconds()
        for _ in 0..<steps { try step() }
        return Double(batch * seq * steps) / (monotonicSeconds() - t0)
    }

    /// AdapterHub `adapters` 1.3 training the same bottleneck configuration on the same batch (its own
    /// environment: transformers 4.57), dropout off, AdamW, one untimed step.
    static let adapterHubScript = """
    import json, resource, sys, time, torch, adapters
    from adapters import DoubleSeqBnConfig, ParBnConfig, SeqBnConfig
    a = json.load(sys.stdin)
    torch.set_num_threads(2); torch.manual_seed(0)
    ids = torch.tensor(a["ids"])
    if a["task"] == "classification":
        from transformers import AutoModelForSequenceClassification
        m = AutoModelForSequenceClassification.from_pretrained(a["path"], num_labels=2)
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.arange(ids.shape[0]) % 2)
    else:
        import os
        from transformers import AutoModelForCausalLM
        d, f = os.path.split(a["path"])
        m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
    adapters.init(m)
    cfg = {"seqbn": SeqBnConfig, "houlsby": DoubleSeqBnConfig, "parbn": ParBnConfig}[a["kind"]](reduction_factor=a["reduction_factor"])
    m.add_adapter("task", config=cfg); m.train_adapter("task"); m.eval()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    def step():
        loss = m(**batch).loss
        loss.backward(); opt.step(); opt.zero_grad()
    step()
    t = time.time()
    for _ in range(a["steps"]): step()
    print(json.dumps({"tokens_per_second": ids.numel() * a["steps"] / (time.time() - t),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """

    /// The methods the peer script runs (PEFT's, and full fine-tuning in plain PyTorch).
    static let peerMethods: Set = ["lora", "dora", "adalora", "ia3", "vera", "prompt", "prefix", "full"]

    static let peerScript = """
    import inspect, json, sys, time, resource, torch
    from peft import AdaLoraConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, VeraConfig, get_peft_model
    a = json.load(sys.stdin); torch.set_num_threads(2); torch.manual_seed(0)
    ids = torch.tensor(a["ids"]); targets = a["targets"].split(",")
    def config(task_type):
        if a["method"] == "prompt":
            return PromptTuningConfig(num_virtual_tokens=a["virtual_tokens"], task_type=task_type)
        if a["method"] == "prefix":
            # PEFT 0.21.2 looks for `past_key_values` in BertModel.forward's signature, which transformers 5.24
            # renamed `cache` (the old name still works): show PEFT the name, this process only.
            from transformers.models.bert import modeling_bert
            f = modeling_bert.BertModel.forward; sig = inspect.signature(f)
            if "past_key_values" not in sig.parameters:
                ps = list(sig.parameters.values())
                ps.insert([q.name for q in ps].index("cache") + 1, inspect.Parameter("past_key_values", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None))
                f.__signature__ = sig.replace(parameters=ps)
            return PrefixTuningConfig(num_virtual_tokens=a["virtual_tokens"], prefix_projection=False, task_type=task_type)
        if a["method"] == "vera":
            return VeraConfig(r=a["rank"], target_modules=targets, task_type=task_type, vera_dropout=0.0)
        if a["method"] == "ia3":
            return IA3Config(target_modules=targets, feedforward_modules=[f for f in a["feedforward"].split(",") if f], task_type=task_type)
        if a["method"] == "adalora":
            return AdaLoraConfig(init_r=a["rank"], target_r=max(1, a["rank"] // 2), total_step=a["steps"] + 1, target_modules=targets,
                                 task_type=task_type, lora_dropout=0.0)
        return LoraConfig(r=a["rank"], lora_alpha=2 * a["rank"], target_modules=targets, task_type=task_type, lora_dropout=0.0,
                          use_dora=a["method"] == "dora")
    if a["task"] == "classification":
        from transformers import AutoModelForSequenceClassification
        m = AutoModelForSequenceClassification.from_pretrained(a["path"], num_labels=2)
        cfg = None if a["method"] == "full" else config("SEQ_CLS")
        labels = torch.arange(ids.shape[0]) % 2
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    else:
        import os
        from transformers import AutoModelForCausalLM
        d, f = os.path.split(a["path"])
        m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
        cfg = None if a["method"] == "full" else config("CAUSAL_LM")
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids)
    if a["method"] == "full":  # the targeted linear layers' weights and biases train (all-linear: every one but the heads)
        for n, p in m.named_parameters():
            module = n.rsplit(".", 1)[0]
            linear = isinstance(m.get_submodule(module), torch.nn.Linear) and not module.endswith(("classifier", "lm_head"))
            picked = targets == ["all-linear"] or any(module == t or module.endswith("." + t) for t in targets)
            p.requires_grad = (linear and picked) or module.endswith("classifier")
        m.eval()
    else:
        m = get_peft_model(m, cfg); m.eval()  # dropout off on both sides (Graft trains without the base model's dropout)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    def step(autocast, i):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = m(**batch).loss
        loss.backward(); opt.step()
        if a["method"] == "adalora": m.base_model.update_and_allocate(i)  # PEFT's documented loop
        opt.zero_grad()
    def measure(autocast):
        step(autocast, 0)
        t = time.time()
        for i in range(a["steps"]): step(autocast, i + 1)
        return ids.numel() * a["steps"] / (time.time() - t)
    out = {"tokens_per_second": measure(False), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if a["autocast"]: out["autocast_tokens_per_second"] = measure(True)  # the same bf16 products Graft's bf16 does
    print(json.dumps(out))
    """
}

/// Products over packed frozen weights — bf16 (AVX512-BF16) and float32, classical and Strassen —
/// against OpenBLAS SGEMM split over the cores by columns (as training runs it), in GFLOPS.
public struct GemmBenchmark: Sendable {
    public var shapes: [(m: Int, k: Int, n: Int)] = [(2048, 384, 384), (2048, 384, 1536), (2048, 1536, 384), (512, 576, 576),
                                                     (512, 576, 1536), (512, 1536, 576), (64, 576, 49152), (64, 49152, 576)]

    public init() {}

    /// GFLOPS per candidate; Strassen's is the effective rate (2·m·k·n over its time, though it does
    /// 7/8 of those operations), nil where k or n is odd; bf16 nil without AVX512-BF16 (the portable
    /// fallback runs at a few GFLOPS).
    public struct Row: Sendable { public let m: Int, k: Int, n: Int; public let bf16: Double?, packed: Double, strassen: Double?, blas: Double }

    public func run() -> [Row] {
        Linalg.useSingleThreadedBLAS()
        return shapes.map { (m, k, n) in
            // Eight inputs and outputs in turn, as a model's products see fresh activations (one A and C
            // reused would stay in cache and flatter every kernel).
            var rng = SeededRNG(seed: 3)
            func random(_ count: Int) -> FloatBuffer { FloatBuffer((0..<count).map { _ in rng.nextUnitFloat() - 0.5 }) }
            let inputs = (0..<8).map { _ in random(m * k) }, outputs = (0..<8).map { _ in random(m * n) }
            let b = random(k * n)
            let reps = max(2, 100_000_000_000 / (2 * m * n * k))  // about half a second per measurement
            func time(_ f: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> Double {
                f(inputs[0].values.baseAddress!, outputs[0].mutable.baseAddress!)
                let t0 = monotonicSeconds()
                for r in 0..<reps { f(inputs[r % 8].values.baseAddress!, outputs[r % 8].mutable.baseAddress!) }
                return 2 * Double(m * n * k) * Double(reps) / (monotonicSeconds() - t0) / 1e9
            }
            let packed = F32Matrix(b.values.baseAddress!, k: k, n: n, transposed: false, algorithm: .classical)
            let strassen = k % 2 == 0 && n % 2 == 0 ? F32Matrix(b.values.baseAddress!, k: k, n: n, transposed: false, algorithm: .strassen) : nil
            var bf: Double?
            if BF16Matrix.hardwareAccelerated {
                let mat = BF16Matrix(b.values.baseAddress!, k: k, n: n, transposed: false)
                bf = time { a, c in mat.multiply(a, m: m, into: c) }
            }
            let pf = time { a, c in packed.multiply(a, m: m, into: c) }
            let sf = strassen.map { s in time { a, c in s.multiply(a, m: m, into: c) } }
            let f32 = time { a, c in Linalg.gemmParallel(m: m, n: n, k: k, a: a, b: b.values.baseAddress!, c: c) }
            return Row(m: m, k: k, n: n, bf16: bf, packed: pf, strassen: sf, blas: f32)
        }
    }
}
