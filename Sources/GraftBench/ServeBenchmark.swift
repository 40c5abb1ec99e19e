import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GraftAdapters
import GraftFormats
import GraftHTTP
import GraftModels
import GraftTensor

/// `graft serve` under load from this process (clients on their own threads, streaming completions over
/// loopback HTTP): output tokens/s and time to first token (p50, p99) at each concurrency, with requests
/// spread over 1, 8 or 32 distinct LoRA adapters; and llama.cpp's server (llama-cpp-python, 2 threads,
/// the same GGUF, the base model) at the same concurrency when installed.
public struct ServeBenchmark: Sendable {
    public var graft: String
    public var model = "smollm2"
    public var concurrency = [1, 8, 32]
    public var adapterCounts = [1, 8, 32]
    /// Completion tokens per request (generation past end-of-sequence, so every request costs the same).
    public var maxTokens = 64
    /// Requests per configuration: this many per client, at least 8 in all.
    public var requestsPerClient = 2
    public var peer = true
    public var workDir: String

    public init(graft: String, workDir: String) { self.graft = graft; self.workDir = workDir }

    public struct Row: Sendable {
        public let server: String
        public let adapters: Int
        public let concurrency: Int
        public let tokensPerSecond: Double
        public let ttftP50: Double, ttftP99: Double
    }

    static let prompts = ["Write a short story about a lighthouse keeper.", "Explain how rain forms, step by step.",
                          "List some ideas for a birthday party.", "Describe the city of Paris to a child.",
                          "What makes a good cup of tea?", "Tell me about the history of bicycles."]

    public func run(log: (String) -> Void, row: (Row) -> Void) throws {
        let path = try ModelLocator.resolve(model)
        guard path.hasSuffix(".gguf") else { throw BenchError("graft bench serve needs a GGUF model (llama.cpp's server reads only GGUF)") }
        let lm = try CausalLM(path: path)
        let folder = workDir + "/adapters"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let most = adapterCounts.max() ?? 1
        log("writing \(most) LoRA adapters (r = 8 on q, k, v, o) to \(folder)")
        try Self.writeAdapters(most, for: lm.model, into: folder)
        let server = try ServerProcess(graft: graft, arguments: ["--model", path, "--name", "base", "--adapters", folder, "--max-adapters", String(most),
                                                                 "--max-batch", String(concurrency.max() ?? 32)])
        defer { server.stop() }
        for n in adapterCounts {
            for c in concurrency {
                let r = try load(port: server.port, concurrency: c, models: (0..<n).map { "lora\($0)" }, eosField: ("ignore_eos", .bool(true)))
                row(Row(server: "graft", adapters: n, concurrency: c, tokensPerSecond: r.rate, ttftP50: r.p50, ttftP99: r.p99))
            }
        }
        guard peer, let python = Peers.python else {
            if peer { log("llama.cpp's server is not installed (../shared/tools/peer-env.sh): graft alone") }
            return
        }
        log("starting llama.cpp's server (llama-cpp-python, 2 threads)")
        let port = try Self.freePort()
        let llama = try ServerProcess(executable: python, arguments: ["-m", "llama_cpp.server", "--model", path, "--n_threads", "2", "--n_ctx", "4096",
                                                                      "--port", String(port), "--host", "127.0.0.1"], port: port)
        defer { llama.stop() }
        // End-of-sequence banned instead of ignore_eos (which llama-cpp-python does not take).
        let ban: JSONValue = .object([(String(lm.eosId ?? 0), .double(-100))])
        for c in concurrency {
            let r = try load(port: port, concurrency: c, models: ["base"], eosField: ("logit_bias", ban))
            row(Row(server: "llama.cpp", adapters: 0, concurrency: c, tokensPerSecond: r.rate, ttftP50: r.p50, ttftP99: r.p99))
        }
    }

    /// `clients` threads each sending streamed completions one after another, the models in turn.
    func load(port: Int, concurrency clients: Int, models: [String], eosField: (String, JSONValue)) throws -> (rate: Double, p50: Double, p99: Double) {
        let total = max(8, clients * requestsPerClient)
        let tally = Tally()
        let done = DispatchSemaphore(value: 0)
        let start = Date()
        // One thread per client (a dispatch queue would run only as many at once as there are cores).
        for _ in 0..<clients {
            Thread { [maxTokens] in
                defer { done.signal() }
                while let i = tally.take(below: total) {
                    let body: JSONValue = .object([("model", .string(models[i % models.count])), ("prompt", .string(Self.prompts[i % Self.prompts.count])),
                                                   ("max_tokens", .int(Int64(maxTokens))), ("temperature", .double(0)), ("stream", .bool(true)), eosField])
                    do { tally.add(try Self.stream(port: port, body: body.serialized())) } catch { tally.fail(error); return }
                }
            }.start()
        }
        for _ in 0..<clients { done.wait() }
        let (tokens, firsts, failure) = tally.result
        if let failure { throw failure }
        let seconds = Date().timeIntervalSince(start)
        let sorted = firsts.sorted()
        func pct(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)] }
        return (Double(tokens) / seconds, pct(0.5), pct(0.99))
    }

    /// What the clients of one run share.
    final class Tally: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0, tokens = 0, firsts: [Double] = [], failure: (any Error)?
        func take(below total: Int) -> Int? {
            lock.lock(); defer { lock.unlock() }
            guard failure == nil, next < total else { return nil }
            next += 1
            return next - 1
        }
        func add(_ r: (Double, Int)) { lock.lock(); firsts.append(r.0); tokens += r.1; lock.unlock() }
        func fail(_ e: any Error) { lock.lock(); failure = e; lock.unlock() }
        var result: (Int, [Double], (any Error)?) { lock.lock(); defer { lock.unlock() }; return (tokens, firsts, failure) }
    }

    /// One streamed completion: seconds to its first text, and the pieces of text received (one per token).
    static func stream(port: Int, body: String) throws -> (Double, Int) {
        let c = try HTTPConnection(port: port, timeout: 600)
        let t0 = Date()
        try c.send("POST", "/v1/completions", body: Array(body.utf8))
        let (status, _) = try c.head()
        var first: Double?, pieces = 0, pending = ""
        while let chunk = try c.nextChunk() {
            pending += String(decoding: chunk, as: UTF8.self)
            while let r = pending.range(of: "\n\n") {
                let event = String(pending[..<r.lowerBound])
                pending = String(pending[r.upperBound...])
                guard event.hasPrefix("data: "), event != "data: [DONE]", status == 200 else { continue }
                let j = try JSONValue.parse(String(event.dropFirst(6)))
                if let t = j["choices"]?.arrayValue?.first?["text"]?.stringValue, !t.isEmpty {
                    if first == nil { first = Date().timeIntervalSince(t0) }
                    pieces += 1
                }
            }
        }
        guard status == 200, let first else { throw BenchError("a request failed (HTTP \(status)): \(pending)") }
        return (first, pieces)
    }

    /// Distinct rank-8 LoRA adapters on the attention projections, small random updates (PEFT's layout).
    static func writeAdapters(_ n: Int, for model: LlamaModel, into folder: String) throws {
        let modules = ["q_proj", "k_proj", "v_proj", "o_proj"], r = 8
        for i in 0..<n {
            var rng = SeededRNG(seed: UInt64(1000 + i))
            var tensors: [(String, Tensor)] = []
            for layer in 0..<model.config.layers {
                for m in modules {
                    let path = "model.layers.\(layer).self_attn.\(m)"
                    guard let l = model.linear(path) else { continue }
                    let a = (0..<(r * l.inFeatures)).map { _ in (rng.nextUnitFloat() - 0.5) * 0.05 }
                    let b = (0..<(l.outFeatures * r)).map { _ in (rng.nextUnitFloat() - 0.5) * 0.05 }
                    tensors.append(("base_model.model.\(path).lora_A.weight", Tensor(shape: [r, l.inFeatures], values: a)))
                    tensors.append(("base_model.model.\(path).lora_B.weight", Tensor(shape: [l.outFeatures, r], values: b)))
                }
            }
            let config: JSONValue = .object([("peft_type", .string("LORA")), ("task_type", .string("CAUSAL_LM")), ("r", .int(Int64(r))),
                                             ("lora_alpha", .int(16)), ("lora_dropout", .double(0)), ("bias", .string("none")),
                                             ("target_modules", .array(modules.map { .string($0) })), ("base_model_name_or_path", .string("smollm2"))])
            let dir = folder + "/lora\(i)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try LoRAWriter.write(to: dir, config: config, tensors: tensors)
        }
    }

    /// A port nothing listens on now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw BenchError("no free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
