import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GraftModels
import GraftTensor

/// Sentence embeddings per second on all-MiniLM-L6-v2 against sentence-transformers. Both sides embed
/// the same distinct texts (tokenization included) once to warm up, then take turns, one batch each,
/// so that both see the machine in the same state (its speed drifts by ±15 % over minutes). Each rate
/// comes from its median batch time, so a moment of interference does not decide the result.
public struct EmbedBenchmark: Sendable {
    public var model = "minilm"
    public var batch = 32
    /// Tokens per sentence, [CLS] and [SEP] included.
    public var tokens = 64
    public var iterations = 20
    public var peer = true
    /// Graft multiplies in bf16.
    public var bf16 = false
    /// Also time float32 products in the classical order, batches alternating with the default's.
    public var compareClassical = false

    public init() {}

    public struct Result: Sendable {
        public let sentencesPerSecond: Double
        public let classicalSentencesPerSecond: Double?
        public let peerSentencesPerSecond: Double?
        public var ratio: Double? { peerSentencesPerSecond.map { sentencesPerSecond / $0 } }
    }

    public func run(log: (String) -> Void) throws -> Result {
        guard batch > 0, tokens > 2, iterations > 0 else { throw BenchError("--batch and --iterations must be positive and --tokens at least 3") }
        let folder = try ModelLocator.resolve(model)
        Linalg.useSingleThreadedBLAS()  // as graft embed
        var enc = try SentenceEncoder(folder: folder)
        if bf16 { enc.enableBF16() }
        // Distinct texts of one-token words: each tokenizes to exactly `tokens` ids.
        let words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "with", "red", "door", "in", "town"]
        var rng = SeededRNG(seed: 7)
        let texts = (0..<batch).map { _ in (0..<(tokens - 2)).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ") }
        let counts = Set(texts.map { enc.tokenize($0).count })
        guard counts == [tokens] else { throw BenchError("benchmark texts tokenize to \(counts) tokens, expected \(tokens)") }
        let classical = compareClassical ? try SentenceEncoder(folder: folder, products: .classical) : nil
        _ = try enc.embed(texts, batchSize: batch)
        _ = try classical?.embed(texts, batchSize: batch)
        let session = peer ? try PeerSession(script: Self.peerScript, setup: ["folder": folder, "texts": texts, "batch": batch], log: log) : nil
        defer { session?.close() }
        if peer && Peers.python == nil { log("sentence-transformers not installed (../shared/tools/peer-env.sh): peer not measured") }
        var times: [Double] = [], classicalTimes: [Double] = [], peerTimes: [Double] = []
        for _ in 0..<iterations {
            // Turns start 20 ms apart: threads that spin for a moment after their work (PyTorch's
            // OpenMP workers, Graft's pool) are asleep before the other side starts.
            if session != nil { usleep(20_000) }
            let t0 = monotonicSeconds()
            _ = try enc.embed(texts, batchSize: batch)
            times.append(monotonicSeconds() - t0)
            if let classical {
                let t1 = monotonicSeconds()
                _ = try classical.embed(texts, batchSize: batch)
                classicalTimes.append(monotonicSeconds() - t1)
            }
            if let session {
                usleep(20_000)
                guard let answer = session.step(), let t = Double(answer) else { throw BenchError("the sentence-transformers run stopped") }
                peerTimes.append(t)
            }
        }
        return Result(sentencesPerSecond: Double(batch) / median(times),
                      classicalSentencesPerSecond: classicalTimes.isEmpty ? nil : Double(batch) / median(classicalTimes),
                      peerSentencesPerSecond: peerTimes.isEmpty ? nil : Double(batch) / median(peerTimes))
    }

    static let peerScript = """
    import json, sys, time, torch
    from sentence_transformers import SentenceTransformer
    a = json.loads(sys.stdin.readline()); torch.set_num_threads(2)
    m = SentenceTransformer(a["folder"], device="cpu")
    m.encode(a["texts"], batch_size=a["batch"])
    print("ready", flush=True)
    for _ in sys.stdin:
        t = time.time(); m.encode(a["texts"], batch_size=a["batch"]); print(time.time() - t, flush=True)
    """
}

/// SmolLM2 prefill and decode tokens/s against llama.cpp (llama-cpp-python, 2 threads) on the same GGUF.
public struct GenerateBenchmark: Sendable {
    public var model = "smollm2"
    /// Prompt tokens for the prefill measurement.
    public var prompt = 512
    /// Tokens decoded one at a time.
    public var decode = 128
    public var peer = true

    public init() {}

    public struct Result: Sendable {
        public let prefill: Double, decode: Double, decodeInt8: Double
        /// llama.cpp's prefill and decode tokens/s, when installed.
        public let peerPrefill: Double?, peerDecode: Double?
    }

    public func run(log: (String) -> Void) throws -> Result {
        guard prompt > 16, decode > 0 else { throw BenchError("--prompt must be above 16 and --decode positive") }
        let path = try ModelLocator.resolve(model)
        var lm = try CausalLM(gguf: path)
        let base = lm.tokenizer.encode("Once upon a time, in a small village, there lived an old baker who loved bread. ", addSpecialTokens: false)
        let ids = (0..<prompt).map { base[$0 % base.count] }
        var warm = lm.model.makeCache()
        _ = try lm.model.forward(Array(ids.prefix(16)), cache: &warm)
        var cache = lm.model.makeCache()
        let t0 = monotonicSeconds()
        let logits = try lm.model.forward(ids, cache: &cache)[0]
        let prefill = Double(prompt) / (monotonicSeconds() - t0)
        // Decode from the same prefilled cache, float activations then 8-bit ones.
        func decodeRate(_ arithmetic: LlamaModel.DecodeArithmetic) throws -> Double {
            lm.model.decodeArithmetic = arithmetic
            var c = cache
            var l = logits
            let t1 = monotonicSeconds()
            for _ in 0..<decode {
                let next = l.indices.max { l[$0] < l[$1] }!
                l = try lm.model.forward([next], cache: &c)[0]
            }
            return Double(decode) / (monotonicSeconds() - t1)
        }
        let dec = try decodeRate(.float), dec8 = try decodeRate(.int8)
        var pp: Double?, dd: Double?
        if peer {
            if let r = try Peers.run(Self.peerScript, input: ["path": path, "ids": ids, "decode": decode], log: log) {
                pp = r["prefill"] as? Double; dd = r["decode"] as? Double
            } else if Peers.python == nil {
                log("llama.cpp (llama-cpp-python) not installed (../shared/tools/peer-env.sh): peer not measured")
            }
        }
        return Result(prefill: prefill, decode: dec, decodeInt8: dec8, peerPrefill: pp, peerDecode: dd)
    }

    static let peerScript = """
    import json, sys, time
    from llama_cpp import Llama
    a = json.load(sys.stdin)
    llm = Llama(model_path=a["path"], n_ctx=2048, n_threads=2, n_threads_batch=2, n_batch=512, verbose=False)
    llm.eval(a["ids"][:16]); llm.reset()
    t = time.time(); llm.eval(a["ids"]); prefill = len(a["ids"]) / (time.time() - t)
    # Decode speed does not depend on which token is fed: feed the prompt's tokens one at a time.
    t = time.time()
    for i in range(a["decode"]):
        llm.eval([a["ids"][i % len(a["ids"])]])
    decode = a["decode"] / (time.time() - t)
    print(json.dumps({"prefill": prefill, "decode": decode}))
    """
}
