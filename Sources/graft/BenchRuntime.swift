import ArgumentParser
import Foundation
import GraftModels
import GraftTensor
import GraftText

/// The peer environment's Python (../shared/tools/peer-env.sh): GRAFT_PEER_PYTHON, else its default place.
func peerPython() -> String? {
    if let p = ProcessInfo.processInfo.environment["GRAFT_PEER_PYTHON"], FileManager.default.isExecutableFile(atPath: p) { return p }
    let d = "/tmp/graft-peers/venv/bin/python"
    return FileManager.default.isExecutableFile(atPath: d) ? d : nil
}

/// Starts a peer script (offline, 2 threads, stderr discarded) with pipes to its standard input and
/// output; nil when the peer environment is not installed.
func startPeer(_ script: String) throws -> (Process, stdin: FileHandle, stdout: FileHandle)? {
    guard let py = peerPython() else { return nil }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: py)
    p.arguments = ["-c", script]
    var env = ProcessInfo.processInfo.environment
    env["HF_HUB_OFFLINE"] = "1"; env["OMP_NUM_THREADS"] = "2"
    p.environment = env
    let inPipe = Pipe(), outPipe = Pipe()
    p.standardInput = inPipe; p.standardOutput = outPipe; p.standardError = FileHandle.nullDevice
    try p.run()
    return (p, inPipe.fileHandleForWriting, outPipe.fileHandleForReading)
}

/// Runs a peer script with JSON on stdin; returns the JSON object it prints last.
func runPeer(_ script: String, input: [String: Any]) throws -> [String: Any]? {
    guard let (p, stdin, stdout) = try startPeer(script) else { return nil }
    stdin.write(try JSONSerialization.data(withJSONObject: input))
    try stdin.close()
    let data = stdout.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0, let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last else {
        printErr("peer run failed (status \(p.terminationStatus)); is the peer environment complete?")
        return nil
    }
    return try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
}

/// A peer script driven one step at a time, so that Graft and the peer can take turns on the machine:
/// the script reads a JSON line (its set-up) and answers "ready", then answers every line it reads
/// with one line (a step's result).
final class PeerSession {
    private let process: Process
    private let input: FileHandle, output: FileHandle
    private var pending = Data()

    /// nil when the peer environment is not installed or the script fails to start.
    init?(script: String, setup: [String: Any]) throws {
        signal(SIGPIPE, SIG_IGN)  // a peer that died makes writes fail (below), not kill Graft
        guard let (p, stdin, stdout) = try startPeer(script) else { return nil }
        (process, input, output) = (p, stdin, stdout)
        try? input.write(contentsOf: try JSONSerialization.data(withJSONObject: setup) + Data("\n".utf8))
        guard readLine() == "ready" else {
            printErr("peer failed to start (is the peer environment complete?)")
            close()
            return nil
        }
    }

    /// Sends one line and returns the peer's one-line answer (nil if it died).
    func step(_ line: String = "step") -> String? {
        guard (try? input.write(contentsOf: Data((line + "\n").utf8))) != nil else { return nil }
        return readLine()
    }

    private func readLine() -> String? {
        while true {
            if let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[pending.startIndex..<nl], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...nl)
                return line
            }
            let more = output.availableData
            if more.isEmpty { return nil }
            pending.append(more)
        }
    }

    func close() {
        try? input.close()
        process.waitUntilExit()
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
        guard batch > 0, tokens > 2, iterations > 0 else { throw ValidationError("--batch and --iterations must be positive and --tokens at least 3") }
        let folder = try ModelLocator.resolve(model)
        Linalg.useSingleThreadedBLAS()  // as graft embed
        var enc = try SentenceEncoder(folder: folder)
        if bf16 { enc.enableBF16() }
        // Distinct texts of one-token words: each tokenizes to exactly `tokens` ids.
        let words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "with", "red", "door", "in", "town"]
        var rng = SeededRNG(seed: 7)
        let texts = (0..<batch).map { _ in (0..<(tokens - 2)).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ") }
        let counts = Set(texts.map { enc.tokenize($0).count })
        guard counts == [tokens] else { throw ValidationError("benchmark texts tokenize to \(counts) tokens, expected \(tokens)") }
        let classical = compareClassical ? try SentenceEncoder(folder: folder, products: .classical) : nil
        _ = try enc.embed(texts, batchSize: batch)
        _ = try classical?.embed(texts, batchSize: batch)
        let peer = noPeer ? nil : try PeerSession(script: Self.peerScript, setup: ["folder": folder, "texts": texts, "batch": batch])
        defer { peer?.close() }
        var times: [Double] = [], classicalTimes: [Double] = [], peerTimes: [Double] = []
        for _ in 0..<iterations {
            // Turns start 20 ms apart: threads that spin for a moment after their work (PyTorch's
            // OpenMP workers, Graft's pool) are asleep before the other side starts.
            if peer != nil { usleep(20_000) }
            let t0 = Date()
            _ = try enc.embed(texts, batchSize: batch)
            times.append(Date().timeIntervalSince(t0))
            if let classical {
                let t1 = Date()
                _ = try classical.embed(texts, batchSize: batch)
                classicalTimes.append(Date().timeIntervalSince(t1))
            }
            if let peer {
                usleep(20_000)
                guard let answer = peer.step(), let t = Double(answer) else { throw ValidationError("the sentence-transformers run stopped") }
                peerTimes.append(t)
            }
        }
        let ours = Double(batch) / median(times)
        var line = String(format: "graft%@: %.0f sentences/s (%.0f tokens/s)", bf16 ? " (bf16)" : "", ours, ours * Double(tokens))
        if !classicalTimes.isEmpty {
            let c = Double(batch) / median(classicalTimes)
            line += String(format: " | float32 classical products: %.0f sentences/s (default %.3f× that)", c, ours / c)
        }
        if !peerTimes.isEmpty {
            let st = Double(batch) / median(peerTimes)
            line += String(format: " | sentence-transformers: %.0f sentences/s | %.2f×", st, ours / st)
        } else if !noPeer {
            line += peerPython() == nil ? " | sentence-transformers not installed (../shared/tools/peer-env.sh)" : " | sentence-transformers did not run (above)"
        }
        print(line)
    }

    func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
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

struct BenchGenerate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "SmolLM2 prefill and decode tokens/s, against llama.cpp (llama-cpp-python, 2 threads) on the same GGUF when installed.")

    @Option(help: "GGUF model (file or short name).") var model: String = "smollm2"
    @Option(help: "Prompt tokens for the prefill measurement.") var prompt: Int = 512
    @Option(help: "Tokens decoded one at a time.") var decode: Int = 128
    @Flag(help: "Skip the peer.") var noPeer = false

    func run() throws {
        let path = try ModelLocator.resolve(model)
        var lm = try CausalLM(gguf: path)
        let base = lm.tokenizer.encode("Once upon a time, in a small village, there lived an old baker who loved bread. ", addSpecialTokens: false)
        let ids = (0..<prompt).map { base[$0 % base.count] }
        var warm = lm.model.makeCache()
        _ = try lm.model.forward(Array(ids.prefix(16)), cache: &warm)
        var cache = lm.model.makeCache()
        let t0 = Date()
        let logits = try lm.model.forward(ids, cache: &cache)[0]
        let prefill = Double(prompt) / Date().timeIntervalSince(t0)
        // Decode from the same prefilled cache, float activations then 8-bit ones.
        func decodeRate(_ arithmetic: LlamaModel.DecodeArithmetic) throws -> Double {
            lm.model.decodeArithmetic = arithmetic
            var c = cache
            var l = logits
            let t1 = Date()
            for _ in 0..<decode {
                let next = l.indices.max { l[$0] < l[$1] }!
                l = try lm.model.forward([next], cache: &c)[0]
            }
            return Double(decode) / Date().timeIntervalSince(t1)
        }
        let dec = try decodeRate(.float), dec8 = try decodeRate(.int8)
        var line = String(format: "graft: prefill %.0f tok/s (%d tokens), decode %.1f tok/s (%d tokens; %.1f with --int8-decode)",
                          prefill, prompt, dec, decode, dec8)
        if !noPeer, let r = try runPeer(Self.peerScript, input: ["path": path, "ids": ids, "decode": decode]),
           let pp = r["prefill"] as? Double, let dd = r["decode"] as? Double {
            line += String(format: "\nllama.cpp: prefill %.0f tok/s, decode %.1f tok/s | graft/llama.cpp: prefill %.2f×, decode %.2f× (%.2f× with --int8-decode)",
                           pp, dd, prefill / pp, dec / dd, dec8 / dd)
        } else if !noPeer { line += " | llama.cpp (llama-cpp-python) not installed (../shared/tools/peer-env.sh)" }
        print(line)
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
