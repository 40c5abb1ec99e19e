import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GraftFormats
import GraftTensor

/// `graft merge` against mergekit on SmolLM2-135M-shaped fine-tunes: both run as child processes on
/// the same inputs, timed with their peak memory, beside the I/O limit (bytes read + written over the
/// measured file-copy bandwidth).
public struct MergeBenchmark: Sendable {
    /// Working folder for the generated models and outputs.
    public var dir: String
    public var models = 4
    /// Transformer layers (30 as in SmolLM2-135M; fewer for a quick run).
    public var layers = 30
    public var methods = ["ties", "task_arithmetic"]
    public var peer = true

    public init(dir: String) { self.dir = dir }

    public struct Row: Sendable {
        public let method: String
        public let graft: Peers.Measurement
        public let mergekit: Peers.Measurement?
        public let ioLimitSeconds: Double
        public var speedup: Double? { mergekit.map { $0.seconds / graft.seconds } }
    }

    public struct Result: Sendable {
        public let rows: [Row]
        public let inputBytes: Int, outputBytes: Int, copyBandwidth: Double
        /// Whether mergekit was found (PATH or the peer environment).
        public let peerFound: Bool
    }

    /// Runs the merges; `graft` is the path of the graft executable. Generates the models once (≈ 538 MB each).
    public func run(graft: String, log: (String) -> Void) throws -> Result {
        let modelsDir = dir + "/models-\(layers)l"
        try SyntheticLlama.ensure(at: modelsDir, fineTunes: models, layers: layers, log: log)
        let inputBytes = try (0...models).reduce(0) { acc, i in
            acc + (try Checkpoint(path: modelsDir + "/" + SyntheticLlama.name(i))).dataBytes
        }
        let outputBytes = try Checkpoint(path: modelsDir + "/base").dataBytes
        // Every input read once before anything is timed: the first tool to run would otherwise pay for
        // the disk (a run after other work found them evicted: TIES 8.1 s instead of 3.2).
        for i in 0...models { try Self.readThrough(modelsDir + "/" + SyntheticLlama.name(i) + "/model.safetensors") }
        let bandwidth = try Self.copyBandwidth(modelsDir + "/base/model.safetensors", scratch: dir + "/copy.tmp")
        let ioLimit = Double(inputBytes + outputBytes) / bandwidth
        let mergekit = peer ? Peers.tool("mergekit-yaml") : nil
        if mergekit == nil && peer { log("mergekit-yaml not found (PATH, \(Peers.defaultRoot)): peer not measured; build it with ../shared/tools/peer-env.sh") }
        var rows: [Row] = []
        for method in methods {
            let cfg = dir + "/\(method).yml"
            try config(method: method, modelsDir: modelsDir).write(toFile: cfg, atomically: true, encoding: .utf8)
            let out = dir + "/out-graft-\(method)"
            try? FileManager.default.removeItem(atPath: out)
            let g = try Peers.measure([graft, "merge", cfg, out])
            try? FileManager.default.removeItem(atPath: out)
            var m: Peers.Measurement?
            if let mk = mergekit {
                let mout = dir + "/out-mergekit-\(method)"
                try? FileManager.default.removeItem(atPath: mout)
                m = try Peers.measure([mk, cfg, mout, "--allow-crimes", "--lazy-unpickle"], env: ["HF_HUB_OFFLINE": "1"], allowFailure: true)
                try? FileManager.default.removeItem(atPath: mout)
            }
            rows.append(Row(method: method, graft: g, mergekit: m, ioLimitSeconds: ioLimit))
        }
        return Result(rows: rows, inputBytes: inputBytes, outputBytes: outputBytes, copyBandwidth: bandwidth, peerFound: mergekit != nil)
    }

    /// The mergekit YAML both tools run: TIES at density 0.3 and weight 1, task arithmetic at 1/models.
    public func config(method: String, modelsDir: String) -> String {
        var s = "merge_method: \(method)\nbase_model: \(modelsDir)/base\ndtype: float32\nmodels:\n"
        for i in 1...models {
            s += "- model: \(modelsDir)/\(SyntheticLlama.name(i))\n  parameters:\n    weight: \(method == "ties" ? "1.0" : String(format: "%.3f", 1.0 / Double(models)))\n"
            if method == "ties" { s += "    density: 0.3\n" }
        }
        return s
    }

    /// Reads a file to its end (into the page cache).
    static func readThrough(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw BenchError("cannot read \(path)") }
        defer { close(fd) }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 8 << 20, alignment: 4096)
        defer { buf.deallocate() }
        while read(fd, buf, 8 << 20) > 0 {}
    }

    /// File-copy bandwidth (bytes read + written per second) copying one input with read/write
    /// through an 8 MB buffer, page cache warm — what a merge that only moved bytes would take.
    static func copyBandwidth(_ path: String, scratch: String) throws -> Double {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 8 << 20, alignment: 4096)
        defer { buf.deallocate() }
        func copyOnce() throws -> (Int, Double) {
            let src = open(path, O_RDONLY), dst = open(scratch, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard src >= 0, dst >= 0 else { throw BenchError("cannot copy \(path) to \(scratch)") }
            defer { close(src); close(dst); unlink(scratch) }
            let start = monotonicSeconds()
            var total = 0
            while true {
                let r = read(src, buf, 8 << 20)
                if r <= 0 { break }
                var w = 0
                while w < r { let k = write(dst, buf + w, r - w); if k <= 0 { break }; w += k }
                total += r
            }
            return (total, monotonicSeconds() - start)
        }
        _ = try copyOnce()  // warm the page cache
        let (bytes, t) = try copyOnce()
        return Double(2 * bytes) / t
    }
}

/// Float32 checkpoints with SmolLM2-135M's tensor shapes (hidden 576, 9/3 heads of 64, FFN 1536,
/// vocabulary 49,152, tied embeddings): a random base and fine-tunes = base + low-rank + sparse + noise.
public enum SyntheticLlama {
    public static func name(_ i: Int) -> String { i == 0 ? "base" : "ft\(i)" }

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

    /// Writes the base and `fineTunes` fine-tunes under `dir` unless already there (each atomically).
    public static func ensure(at dir: String, fineTunes: Int, layers: Int, log: (String) -> Void) throws {
        let shapes = shapes(layers: layers)
        for i in 0...fineTunes {
            let d = dir + "/" + name(i)
            if FileManager.default.fileExists(atPath: d + "/model.safetensors") { continue }
            log("generating \(d)")
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
