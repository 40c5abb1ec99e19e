import Foundation
import GraftAdapters
import GraftEval
import GraftFormats
import GraftHTTP
import GraftModels
@testable import GraftServe
import GraftTensor
import GraftText
import XCTest
import GraftTestSupport

/// `graft serve` over real HTTP on a loopback port: one server process (SmolLM2 with three adapters)
/// shared by the tests of this class, requests from `HTTPConnection`.
final class ServeTests: XCTestCase {
    static let adapterFixtures = ["peft-smollm2-lora", "grad-smollm2-ia3", "grad-smollm2-vera"]
    /// Adapters that change the sequence (a prompt, a prefix) or add sublayers (a bottleneck).
    static let sequenceFixtures = ["grad-smollm2-prompt", "grad-smollm2-prefix", "bottleneck-smollm2-seqbn"]
    nonisolated(unsafe) static var shared: (server: ServerProcess, adapters: String)?

    /// The adapters folder: copies of the six fixtures and of a MiniLM prompt the server must leave out
    /// (its rows do not fit SmolLM2) (copies: a link leading out of the folder is refused to run-time loads).
    static func makeAdaptersFolder() throws -> String {
        let dir = NSTemporaryDirectory() + "graft-serve-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for name in adapterFixtures + sequenceFixtures {
            try FileManager.default.copyItem(atPath: referenceRoot + "/models/" + name, toPath: dir + "/" + name)
        }
        try FileManager.default.copyItem(atPath: referenceRoot + "/models/grad-minilm-prompt", toPath: dir + "/minilm-prompt")
        return dir
    }

    func server() throws -> ServerProcess {
        if let s = Self.shared {
            // A server that died (a sanitizer report, a crash) says why once, instead of refusing connections.
            if !s.server.process.isRunning { XCTFail("graft serve exited (\(s.server.process.terminationStatus)): \(s.server.stderr.suffix(4000))") }
            return s.server
        }
        _ = try fetchedSmolLM2GGUF()
        let dir = try Self.makeAdaptersFolder()
        let s = try ServerProcess(graft: graftExecutable(Self.self), arguments: ["--model", "smollm2", "--adapters", dir, "--max-body-mb", "1"])
        Self.shared = (s, dir)
        return s
    }

    override class func tearDown() {
        if let s = shared {
            let (status, err) = s.server.stop()
            XCTAssertEqual(status, 0, "graft serve did not exit cleanly on SIGTERM: \(err)")
            try? FileManager.default.removeItem(atPath: s.adapters)
            shared = nil
        }
        super.tearDown()
    }

    func post(_ path: String, _ json: String) throws -> HTTPConnection.Response {
        try HTTPConnection.request(port: try server().port, "POST", path, json: json)
    }

    func get(_ path: String) throws -> HTTPConnection.Response {
        try HTTPConnection.request(port: try server().port, "GET", path)
    }

    /// `graft generate`'s output for the same settings (what a batched request must equal).
    func generate(adapter: String?, prompt: String, temperature: Double, seed: Int, maxTokens: Int) throws -> String {
        var (status, s, err) = try runGraft(Self.self, ["generate", "--model", "smollm2", "--prompt", prompt, "--temperature", String(temperature),
                                                          "--seed", String(seed), "--max-tokens", String(maxTokens), "--top-k", "40", "--top-p", "0.95"]
                                                         + (adapter.map { ["--adapter", referenceRoot + "/models/" + $0] } ?? []))
        XCTAssertEqual(status, 0, err)
        if s.hasSuffix("\n") { s.removeLast() }  // generate ends its output with a newline
        return s
    }

    // MARK: - Endpoints

    func testModelsHealthAndMetrics() throws {
        let models = try get("/v1/models")
        XCTAssertEqual(models.status, 200)
        let ids = try models.json()["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        XCTAssertEqual(Set(ids), Set(["smollm2"] + Self.adapterFixtures + Self.sequenceFixtures), "the MiniLM prompt must be left out")
        let log = try server().stderr
        XCTAssertTrue(log.contains("'minilm-prompt' left out") && log.contains("384 wide"), log)
        let health = try get("/health").json()
        XCTAssertEqual(health["status"]?.stringValue, "ok")
        XCTAssertEqual(health["adapters"]?.intValue, 6)
        let r = try post("/v1/completions", #"{"model": "grad-smollm2-vera", "prompt": "Hello", "max_tokens": 3, "temperature": 0}"#)
        XCTAssertEqual(r.status, 200, r.text)
        let metrics = try get("/metrics")
        XCTAssertEqual(metrics.status, 200)
        XCTAssertTrue(metrics.text.contains(#"graft_requests_total{endpoint="completions",adapter="grad-smollm2-vera",status="200"}"#), metrics.text)
        XCTAssertTrue(metrics.text.contains(#"graft_generated_tokens_total{adapter="grad-smollm2-vera"}"#), metrics.text)
        XCTAssertTrue(metrics.text.contains("graft_batch_rows_bucket"), metrics.text)
        XCTAssertTrue(metrics.text.contains("graft_batch_sequences_bucket"), metrics.text)
        XCTAssertTrue(metrics.text.contains("graft_time_to_first_token_seconds_bucket"), metrics.text)
    }

    /// Requests for different adapters (and the base) at once, sharing batched passes, each equal to
    /// `graft generate` run alone with that adapter and seed.
    func testConcurrentMixedAdapterRequestsEqualGraftGenerateAlone() throws {
        let texts = try assertBatchedEqualGenerateAlone([
            ("smollm2", nil, "The capital of France is", 0, 0),
            ("peft-smollm2-lora", "peft-smollm2-lora", "The capital of France is", 0.7, 11),
            ("grad-smollm2-ia3", "grad-smollm2-ia3", "Once upon a time", 0.7, 5),
            ("grad-smollm2-vera", "grad-smollm2-vera", "Once upon a time", 0, 0),
            ("peft-smollm2-lora", "peft-smollm2-lora", "Write a haiku about rain.", 0.9, 3),
        ])
        XCTAssertNotEqual(texts[0], texts[1], "the LoRA adapter should change the output")
    }

    /// Prompt-tuning, prefix-tuning and bottleneck adapters batched with LoRA and the base: each sequence
    /// starts with its own virtual tokens (a prompt's embeddings, a prefix's keys and values in its own
    /// cache) and gets its own bottleneck on its rows only — every output equal to `graft generate` alone.
    func testPromptPrefixAndBottleneckAdaptersBatchWithTheOthers() throws {
        let texts = try assertBatchedEqualGenerateAlone([
            ("grad-smollm2-prompt", "grad-smollm2-prompt", "The capital of France is", 0, 0),
            ("smollm2", nil, "The capital of France is", 0, 0),
            ("grad-smollm2-prefix", "grad-smollm2-prefix", "The capital of France is", 0.8, 7),
            ("bottleneck-smollm2-seqbn", "bottleneck-smollm2-seqbn", "The capital of France is", 0, 0),
            ("peft-smollm2-lora", "peft-smollm2-lora", "Once upon a time", 0.7, 2),
            ("grad-smollm2-prompt", "grad-smollm2-prompt", "Once upon a time", 0.9, 4),
            ("bottleneck-smollm2-seqbn", "bottleneck-smollm2-seqbn", "Write a haiku about rain.", 0.7, 9),
        ])
        XCTAssertNotEqual(texts[0], texts[1], "the prompt should change the output")
        XCTAssertNotEqual(texts[3], texts[1], "the bottleneck should change the output")
        // A bottleneck composes with weights (at 0 it is the base); a prompt does not compose.
        func completion(_ extra: String) throws -> HTTPConnection.Response {
            try post("/v1/completions", #"{"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 24, "temperature": 0, \#(extra)}"#)
        }
        let atZero = try completion(#""adapters": [{"name": "bottleneck-smollm2-seqbn", "scale": 0}, {"name": "peft-smollm2-lora", "scale": 0}]"#)
        XCTAssertEqual(try atZero.json()["choices"]?.arrayValue?.first?["text"]?.stringValue, texts[1], atZero.text)
        let composed = try completion(#""adapters": [{"name": "grad-smollm2-prompt", "scale": 1}, {"name": "peft-smollm2-lora", "scale": 1}]"#)
        XCTAssertEqual(composed.status, 400, composed.text)
        XCTAssertTrue(composed.text.contains("cannot be weighted or composed"), composed.text)
    }

    /// Sends every case before reading any response (the server batches them together), checks each
    /// text equals `graft generate` alone and that passes with several requests ran; returns the texts.
    func assertBatchedEqualGenerateAlone(_ cases: [(model: String, adapter: String?, prompt: String, temperature: Double, seed: Int)],
                                         file: StaticString = #filePath, line: UInt = #line) throws -> [String] {
        let port = try server().port
        let maxTokens = 24
        let passesBefore = try passesWithSeveralRequests()
        // Send every request before reading any response: the server batches them together.
        let connections = try cases.map { c -> HTTPConnection in
            let conn = try HTTPConnection(port: port)
            let body = #"{"model": "\#(c.model)", "prompt": \#(JSONValue.quote(c.prompt)), "max_tokens": \#(maxTokens), "temperature": \#(c.temperature), "seed": \#(c.seed), "top_k": 40, "top_p": 0.95}"#
            try conn.send("POST", "/v1/completions", body: Array(body.utf8))
            return conn
        }
        let texts = try connections.map { conn -> String in
            let r = try conn.response()
            XCTAssertEqual(r.status, 200, r.text)
            return try r.json()["choices"]?.arrayValue?.first?["text"]?.stringValue ?? "?"
        }
        for (c, text) in zip(cases, texts) {
            XCTAssertEqual(text, try generate(adapter: c.adapter, prompt: c.prompt, temperature: c.temperature, seed: c.seed, maxTokens: maxTokens),
                           "\(c.model) at temperature \(c.temperature)", file: file, line: line)
        }
        // The server did batch them: passes with more than one request ran meanwhile.
        XCTAssertGreaterThan(try passesWithSeveralRequests(), passesBefore, "no pass held two requests: nothing was batched", file: file, line: line)
        return texts
    }

    /// Batched passes so far that held more than one request (graft_batch_sequences: all passes minus those of one).
    func passesWithSeveralRequests() throws -> Double {
        let lines = try get("/metrics").text.components(separatedBy: "\n")
        func value(_ prefix: String) -> Double { lines.first { $0.hasPrefix(prefix) }.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0 }
        return value("graft_batch_sequences_count") - value(#"graft_batch_sequences_bucket{le="1.0"}"#)
    }

    func testChatStreamingEqualsNonStreaming() throws {
        let body = #"{"model": "peft-smollm2-lora", "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 20, "temperature": 0"#
        let whole = try post("/v1/chat/completions", body + "}")
        XCTAssertEqual(whole.status, 200, whole.text)
        let j = try whole.json()
        let content = j["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue
        XCTAssertEqual(j["object"]?.stringValue, "chat.completion")
        let usage = j["usage"]
        let stream = try post("/v1/chat/completions", body + #", "stream": true, "stream_options": {"include_usage": true}}"#)
        XCTAssertEqual(stream.status, 200)
        XCTAssertEqual(stream.headers["content-type"], "text/event-stream")
        let events = stream.events
        XCTAssertEqual(events.last, "[DONE]")
        let chunks = try events.dropLast().map { try JSONValue.parse($0) }
        XCTAssertTrue(chunks.allSatisfy { $0["object"]?.stringValue == "chat.completion.chunk" })
        XCTAssertEqual(chunks.first?["choices"]?.arrayValue?.first?["delta"]?["role"]?.stringValue, "assistant")
        let streamed = chunks.compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue }.joined()
        XCTAssertEqual(streamed, content)
        XCTAssertGreaterThan(chunks.count, 4, "the text should arrive in pieces")
        let finish = chunks.compactMap { $0["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue }
        XCTAssertEqual(finish, [j["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue ?? "?"])
        XCTAssertEqual(chunks.last?["usage"], usage)
        XCTAssertEqual(chunks.last?["choices"]?.arrayValue?.count, 0)
    }

    /// `n` choices: each its own sequence, choice i equal to `graft generate` with seed + i; streamed,
    /// each choice's chunks carry its index and rejoin to the same texts; usage sums the completions.
    func testSeveralChoicesPerRequest() throws {
        let body = #"{"model": "peft-smollm2-lora", "prompt": "Once upon a time", "max_tokens": 12, "ignore_eos": true, "temperature": 0.9, "seed": 5, "top_k": 40, "top_p": 0.95, "n": 3"#
        let whole = try post("/v1/completions", body + "}")
        XCTAssertEqual(whole.status, 200, whole.text)
        let choices = try whole.json()["choices"]?.arrayValue ?? []
        XCTAssertEqual(choices.compactMap { $0["index"]?.intValue }, [0, 1, 2])
        let texts = choices.compactMap { $0["text"]?.stringValue }
        for (i, text) in texts.enumerated() {
            XCTAssertEqual(text, try generate(adapter: "peft-smollm2-lora", prompt: "Once upon a time", temperature: 0.9, seed: 5 + i, maxTokens: 12), "choice \(i)")
        }
        XCTAssertEqual(Set(texts).count, 3, "three seeds should give three texts: \(texts)")
        XCTAssertEqual(try whole.json()["usage"]?["completion_tokens"]?.intValue, 36)
        XCTAssertEqual(try whole.json()["usage"]?["prompt_tokens"]?.intValue, 4)
        let stream = try post("/v1/completions", body + #", "stream": true, "stream_options": {"include_usage": true}}"#)
        XCTAssertEqual(stream.status, 200, stream.text)
        let chunks = try stream.events.dropLast().map { try JSONValue.parse($0) }
        var streamed = ["", "", ""], finishes = 0
        for c in chunks {
            for choice in c["choices"]?.arrayValue ?? [] {
                let i = Int(choice["index"]?.intValue ?? -1)
                XCTAssertTrue((0..<3).contains(i), c.serialized())
                guard (0..<3).contains(i) else { continue }
                streamed[i] += choice["text"]?.stringValue ?? ""
                if choice["finish_reason"]?.stringValue == "length" { finishes += 1 }
            }
        }
        XCTAssertEqual(streamed, texts)
        XCTAssertEqual(finishes, 3)
        XCTAssertEqual(chunks.last?["usage"]?["completion_tokens"]?.intValue, 36)
        for bad in ["0", "17"] {
            let r = try post("/v1/completions", #"{"model": "smollm2", "prompt": "Hi", "n": \#(bad)}"#)
            XCTAssertEqual(r.status, 400, r.text)
            XCTAssertEqual(try r.json()["error"]?["param"]?.stringValue, "n")
        }
    }

    /// Tools over HTTP with SmolLM2 (whose template does not render tools: Graft describes them): a call of
    /// the named function comes back in `tool_calls` with JSON-object arguments and finish reason
    /// `tool_calls`, the same whole and streamed; misuse is a 400 naming the field.
    func testToolCallsWholeAndStreamed() throws {
        let body = #"{"model": "smollm2", "messages": [{"role": "user", "content": "What is the weather like in Paris today?"}], "max_tokens": 40, "temperature": 0, "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}"#
        let whole = try post("/v1/chat/completions", body + "}")
        XCTAssertEqual(whole.status, 200, whole.text)
        let choice = try XCTUnwrap(try whole.json()["choices"]?.arrayValue?.first)
        XCTAssertEqual(choice["finish_reason"]?.stringValue, "tool_calls", whole.text)
        let call = try XCTUnwrap(choice["message"]?["tool_calls"]?.arrayValue?.first, whole.text)
        XCTAssertEqual(call["type"]?.stringValue, "function")
        XCTAssertEqual(call["function"]?["name"]?.stringValue, "get_weather")
        let arguments = try XCTUnwrap(call["function"]?["arguments"]?.stringValue)
        guard case .object? = try? JSONValue.parse(Array(arguments.utf8)) else { return XCTFail("arguments are not a JSON object: \(arguments)") }
        XCTAssertEqual(choice["message"]?["content"], .null, "the call ends the reply (its closing tag stops it)")
        let stream = try post("/v1/chat/completions", body + #", "stream": true}"#)
        let chunks = try stream.events.dropLast().map { try JSONValue.parse($0) }
        let deltas = chunks.compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["tool_calls"]?.arrayValue?.first }
        XCTAssertEqual(deltas.count, 1, stream.text)
        XCTAssertEqual(deltas.first?["index"]?.intValue, 0)
        XCTAssertEqual(deltas.first?["function"], call["function"])
        XCTAssertEqual(chunks.compactMap { $0["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue }, ["tool_calls"])
        let unknown = try post("/v1/chat/completions", body.replacingOccurrences(of: #""name": "get_weather"}}"#, with: #""name": "nope"}}"#) + "}")
        XCTAssertEqual(unknown.status, 400, unknown.text)
        XCTAssertEqual(try unknown.json()["error"]?["param"]?.stringValue, "tool_choice")
    }

    func testStopSequencesAndLogprobs() throws {
        let r = try post("/v1/completions", #"{"model": "smollm2", "prompt": "1, 2, 3, 4,", "max_tokens": 30, "temperature": 0, "stop": [" 7"], "logprobs": 3}"#)
        XCTAssertEqual(r.status, 200, r.text)
        let choice = try XCTUnwrap(try r.json()["choices"]?.arrayValue?.first)
        let text = try XCTUnwrap(choice["text"]?.stringValue)
        XCTAssertEqual(text, " 5, 6,")
        XCTAssertEqual(choice["finish_reason"]?.stringValue, "stop")
        let lp = try XCTUnwrap(choice["logprobs"])
        let tokens = lp["tokens"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let values = lp["token_logprobs"]?.arrayValue?.compactMap(\.doubleValue) ?? []
        let tops = lp["top_logprobs"]?.arrayValue ?? []
        XCTAssertEqual(tokens.count, values.count)
        XCTAssertEqual(tokens.count, tops.count)
        XCTAssertTrue(tokens.joined().hasPrefix(text), "\(tokens)")
        for (i, (t, v)) in zip(tokens, values).enumerated() {
            let alternatives = tops[i].objectValue ?? []
            XCTAssertEqual(alternatives.count, 3)
            // Greedy: the chosen token is the most likely one, and log-probabilities are ≤ 0 and sorted.
            XCTAssertEqual(alternatives.first?.0, t)
            XCTAssertEqual(alternatives.first?.1.doubleValue ?? 1, v, accuracy: 1e-6)
            let ps = alternatives.compactMap { $0.1.doubleValue }
            XCTAssertEqual(ps, ps.sorted(by: >))
            XCTAssertLessThanOrEqual(v, 0)
        }
        // Chat's form: content[] with top_logprobs.
        let c = try post("/v1/chat/completions", #"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 2}"#)
        let content = try c.json()["choices"]?.arrayValue?.first?["logprobs"]?["content"]?.arrayValue ?? []
        XCTAssertEqual(content.count, 4, c.text)
        XCTAssertTrue(content.allSatisfy { $0["top_logprobs"]?.arrayValue?.count == 2 && $0["bytes"]?.arrayValue != nil })
    }

    /// Each bad request gets its status and an OpenAI error body naming the field, and the server stays up.
    func testBadRequestsGetOpenAIErrorsAndTheServerStaysUp() throws {
        func check(_ r: HTTPConnection.Response, _ status: Int, param: String?, code: String? = nil, _ message: String = "", line: UInt = #line) throws {
            XCTAssertEqual(r.status, status, r.text, line: line)
            let e = try XCTUnwrap(try r.json()["error"], r.text, line: line)
            XCTAssertNotNil(e["message"]?.stringValue, line: line)
            XCTAssertNotNil(e["type"]?.stringValue, line: line)
            if let param { XCTAssertEqual(e["param"]?.stringValue, param, r.text, line: line) }
            if let code { XCTAssertEqual(e["code"]?.stringValue, code, r.text, line: line) }
            if !message.isEmpty { XCTAssertTrue(e["message"]?.stringValue?.contains(message) ?? false, r.text, line: line) }
        }
        try check(try post("/v1/chat/completions", #"{"model": "smollm2", "messages": [{"role": "user", "content": "#), 400, param: nil, code: "invalid_json")
        try check(try post("/v1/chat/completions", #"{"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}"#), 404, param: "model", code: "model_not_found", "'nope'")
        try check(try post("/v1/completions", #"{"model": "smollm2", "prompt": "Hi", "max_tokens": 0}"#), 400, param: "max_tokens")
        try check(try post("/v1/completions", #"{"model": "smollm2", "prompt": "Hi", "max_tokens": -3}"#), 400, param: "max_tokens")
        try check(try post("/v1/completions", #"{"model": "smollm2", "prompt": "Hi", "temperature": "hot"}"#), 400, param: "temperature")
        try check(try post("/v1/completions", #"{"prompt": "Hi"}"#), 400, param: "model")
        try check(try post("/v1/completions", #"{"model": "smollm2", "prompt": "Hi", "adapters": [{"name": "missing"}]}"#), 404, param: "adapters")
        let long = "[" + Array(repeating: "42", count: 9000).joined(separator: ",") + "]"
        try check(try post("/v1/completions", #"{"model": "smollm2", "prompt": \#(long)}"#), 400, param: "prompt", code: "context_length_exceeded")
        try check(try post("/v1/completions", #"{"model": "smollm2", "prompt": "Hi", "max_tokens": 100000}"#), 400, param: "max_tokens", code: "context_length_exceeded")
        try check(try post("/v1/embeddings", #"{"model": "smollm2", "input": "Hi"}"#), 404, param: nil, code: "unsupported_endpoint")
        // Arrow needs two plain LoRA adapters; this server has one (and IA³, VeRA, which it leaves out).
        try check(try post("/v1/completions", #"{"model": "auto", "prompt": "Hi"}"#), 400, param: "model", code: "routing_unavailable", "at least two")
        // Larger than --max-body-mb 1: refused from its Content-Length, and when it is not declared.
        let big = #"{"model": "smollm2", "prompt": ""# + String(repeating: "a", count: 1_100_000) + #""}"#
        try check(try post("/v1/completions", big), 413, param: nil, code: "request_too_large")
        let chunked = try HTTPConnection(port: try server().port)
        let payload = Array(big.utf8)
        try chunked.send("POST", "/v1/completions", body: Array(String(payload.count, radix: 16).utf8) + [13, 10] + payload + Array("\r\n0\r\n\r\n".utf8),
                         headers: ["Transfer-Encoding": "chunked"], declareLength: false)
        try check(try chunked.response(), 413, param: nil, code: "request_too_large")
        try check(try get("/v1/nothing-here"), 404, param: nil)
        try check(try get("/v1/completions"), 405, param: nil, "POST")
        // Still serving.
        let ok = try post("/v1/completions", #"{"model": "smollm2", "prompt": "Hi", "max_tokens": 2}"#)
        XCTAssertEqual(ok.status, 200, ok.text)
    }

    /// A client that hangs up mid-stream: its generation stops and its slot is freed.
    func testDisconnectMidStreamFreesTheSlot() throws {
        let port = try server().port
        let c = try HTTPConnection(port: port)
        try c.send("POST", "/v1/completions", body: Array(#"{"model": "smollm2", "prompt": "Tell me a long story.", "max_tokens": 1500, "ignore_eos": true, "stream": true}"#.utf8))
        let (status, _) = try c.head()
        XCTAssertEqual(status, 200)
        _ = try c.nextChunk()
        XCTAssertEqual(try get("/health").json()["running"]?.intValue, 1)
        c.hangUp()
        // The engine notices at its next token boundary: wait for that (bounded), not for a fixed time.
        let deadline = Date().addingTimeInterval(30)
        var running: Int64 = -1
        while Date() < deadline {
            running = try get("/health").json()["running"]?.intValue ?? -1
            if running == 0 { break }
            usleep(20_000)
        }
        XCTAssertEqual(running, 0, "the abandoned request still runs")
        let generated = try get("/metrics").text.components(separatedBy: "\n").first { $0.hasPrefix(#"graft_generated_tokens_total{adapter="smollm2"}"#) }
        let n = Double(generated?.split(separator: " ").last ?? "") ?? 0
        XCTAssertLessThan(n, 1000, "generation went on after the client left")
    }

    /// Adapters added and removed at run time while a request streams; bad ones refused with the reason.
    func testAdapterLoadAndUnloadUnderTraffic() throws {
        let s = try server()
        let dir = try XCTUnwrap(Self.shared?.adapters)
        let streaming = try HTTPConnection(port: s.port)
        try streaming.send("POST", "/v1/completions", body: Array(#"{"model": "peft-smollm2-lora", "prompt": "Once", "max_tokens": 60, "ignore_eos": true, "stream": true}"#.utf8))
        // Under the adapters folder: loads; the same name again: 409.
        let added = try post("/v1/adapters", #"{"name": "lora-copy", "path": "\#(dir)/peft-smollm2-lora"}"#)
        XCTAssertEqual(added.status, 201, added.text)
        XCTAssertEqual(try post("/v1/adapters", #"{"name": "lora-copy", "path": "peft-smollm2-lora"}"#).status, 409)
        // Outside it (or a link leading out of it), without --allow-any-path: 403.
        try FileManager.default.createSymbolicLink(atPath: dir + "/link-out", withDestinationPath: referenceRoot + "/models/grad-smollm2-adalora")
        XCTAssertEqual(try post("/v1/adapters", #"{"name": "x", "path": "link-out"}"#).status, 403)
        // Not an adapter, or one the server cannot batch: 400 with the reason.
        let outside = try post("/v1/adapters", #"{"name": "x", "path": "\#(referenceRoot)/models/grad-smollm2-adalora"}"#)
        XCTAssertEqual(outside.status, 403, outside.text)
        XCTAssertTrue(outside.text.contains("--allow-any-path"), outside.text)
        let prompt = try post("/v1/adapters", #"{"name": "p", "path": "minilm-prompt"}"#)
        XCTAssertEqual(prompt.status, 400, prompt.text)
        XCTAssertTrue(prompt.text.contains("384 wide but the model's embeddings are 576"), prompt.text)
        XCTAssertEqual(try post("/v1/adapters", #"{"name": "q", "path": "no-such-folder"}"#).status, 400)
        XCTAssertEqual(try post("/v1/adapters", #"{"name": "../bad", "path": "peft-smollm2-lora"}"#).status, 400)
        // The new name serves, and equals the adapter it copies.
        let body = #"{"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "model": "#
        let viaCopy = try post("/v1/completions", body + #""lora-copy"}"#), viaOriginal = try post("/v1/completions", body + #""peft-smollm2-lora"}"#)
        XCTAssertEqual(viaCopy.status, 200, viaCopy.text)
        XCTAssertEqual(try viaCopy.json()["choices"]?.arrayValue?.first?["text"], try viaOriginal.json()["choices"]?.arrayValue?.first?["text"])
        XCTAssertTrue(try get("/v1/models").text.contains("lora-copy"))
        // Removed: gone from the list, 404 on use and on a second delete.
        XCTAssertEqual(try HTTPConnection.request(port: s.port, "DELETE", "/v1/adapters/lora-copy").status, 200)
        XCTAssertEqual(try HTTPConnection.request(port: s.port, "DELETE", "/v1/adapters/lora-copy").status, 404)
        XCTAssertEqual(try post("/v1/completions", body + #""lora-copy"}"#).status, 404)
        XCTAssertFalse(try get("/v1/models").text.contains("lora-copy"))
        // The request that streamed meanwhile finished whole.
        let r = try streaming.response()
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.events.last, "[DONE]")
        XCTAssertTrue(r.events.contains { $0.contains(#""finish_reason":"length""#) }, r.text)
    }

    /// An adapter replaced under its name while a request for the old one streams: each request keeps the
    /// weights it started with (they share batched passes, and must not share a row group).
    func testReplacingAnAdapterUnderTrafficKeepsEachRequestOnItsOwnWeights() throws {
        let s = try server()
        let body = { (model: String, stream: Bool) in
            #"{"model": "\#(model)", "prompt": "Once upon a time", "max_tokens": 120, "ignore_eos": true, "temperature": 0, "stream": \#(stream)}"#
        }
        func text(_ r: HTTPConnection.Response) throws -> String { try r.json()["choices"]?.arrayValue?.first?["text"]?.stringValue ?? "?" }
        let loraText = try text(try post("/v1/completions", body("peft-smollm2-lora", false)))
        let veraText = try text(try post("/v1/completions", body("grad-smollm2-vera", false)))
        XCTAssertNotEqual(loraText, veraText)
        XCTAssertEqual(try post("/v1/adapters", #"{"name": "swap", "path": "peft-smollm2-lora"}"#).status, 201)
        let streaming = try HTTPConnection(port: s.port)
        try streaming.send("POST", "/v1/completions", body: Array(body("swap", true).utf8))
        XCTAssertEqual(try streaming.head().status, 200)
        var streamed = try XCTUnwrap(try streaming.nextChunk())
        XCTAssertEqual(try HTTPConnection.request(port: s.port, "DELETE", "/v1/adapters/swap").status, 200)
        XCTAssertEqual(try post("/v1/adapters", #"{"name": "swap", "path": "grad-smollm2-vera"}"#).status, 201)
        XCTAssertEqual(try text(try post("/v1/completions", body("swap", false))), veraText)
        while let c = try streaming.nextChunk() { streamed += c }
        let pieces = String(decoding: streamed, as: UTF8.self).components(separatedBy: "\n\n").compactMap { e -> String? in
            guard e.hasPrefix("data: {") else { return nil }
            return (try? JSONValue.parse(String(e.dropFirst(6))))?["choices"]?.arrayValue?.first?["text"]?.stringValue
        }
        XCTAssertEqual(pieces.joined(), loraText)
        XCTAssertEqual(try HTTPConnection.request(port: s.port, "DELETE", "/v1/adapters/swap").status, 200)
    }

    /// Weighted composition: `adapters` with one adapter at scale 1 equals naming it in `model`; at
    /// scale 0 it equals the base.
    func testComposedAdaptersPerRequest() throws {
        func text(_ extra: String) throws -> String? {
            let r = try post("/v1/completions", #"{"prompt": "The capital of France is", "max_tokens": 10, "temperature": 0, \#(extra)}"#)
            XCTAssertEqual(r.status, 200, r.text)
            return try r.json()["choices"]?.arrayValue?.first?["text"]?.stringValue
        }
        let lora = try text(#""model": "peft-smollm2-lora""#), base = try text(#""model": "smollm2""#)
        XCTAssertEqual(try text(#""model": "smollm2", "adapters": [{"name": "peft-smollm2-lora", "scale": 1}]"#), lora)
        XCTAssertEqual(try text(#""model": "smollm2", "adapters": [{"name": "peft-smollm2-lora", "scale": 0}]"#), base)
        let mixed = try post("/v1/completions", #"{"prompt": "Hi", "max_tokens": 4, "model": "smollm2", "adapters": [{"name": "peft-smollm2-lora", "scale": 0.5}, {"name": "grad-smollm2-vera", "scale": 0.5}]}"#)
        XCTAssertEqual(mixed.status, 200, mixed.text)
    }
}

/// SIGTERM lets running requests finish before the server exits.
final class ServeShutdownTests: XCTestCase {
    func testSIGTERMDrainsRunningRequests() throws {
        _ = try fetchedSmolLM2GGUF()
        let s = try ServerProcess(graft: graftExecutable(Self.self), arguments: ["--model", "smollm2"])
        let c = try HTTPConnection(port: s.port)
        try c.send("POST", "/v1/completions", body: Array(#"{"model": "smollm2", "prompt": "Once", "max_tokens": 80, "ignore_eos": true, "stream": true}"#.utf8))
        XCTAssertEqual(try c.head().status, 200)
        _ = try c.nextChunk()
        s.terminate()
        var body: [UInt8] = []
        while let chunk = try c.nextChunk() { body += chunk }
        let text = String(decoding: body, as: UTF8.self)
        XCTAssertTrue(text.contains(#""finish_reason":"length""#), text)
        XCTAssertTrue(text.hasSuffix("data: [DONE]\n\n"), text)
        let (status, err) = s.stop()
        XCTAssertEqual(status, 0, err)
    }
}

/// A sentence encoder served: /v1/embeddings equal to the encoder run in-process, /v1/classify equal to
/// `graft eval`'s classifier on the same adapter.
final class ServeEncoderTests: XCTestCase {
    func testEmbeddingsAndClassification() throws {
        let minilm = try fetchedModel("minilm")
        let seqcls = referenceRoot + "/models/grad-minilm-seqcls"
        let prompt = referenceRoot + "/models/grad-minilm-prompt", bottleneck = referenceRoot + "/models/bottleneck-minilm-houlsby"
        let s = try ServerProcess(graft: graftExecutable(Self.self), arguments: ["--model", "minilm", "--adapter", "topics=" + seqcls,
                                                                                 "--adapter", "prompt=" + prompt, "--adapter", "houlsby=" + bottleneck])
        defer { s.stop() }
        let texts = ["A cat sat on the mat.", "Stocks fell sharply on Monday."]
        let r = try HTTPConnection.request(port: s.port, "POST", "/v1/embeddings", json: #"{"model": "minilm", "input": ["A cat sat on the mat.", "Stocks fell sharply on Monday."]}"#)
        XCTAssertEqual(r.status, 200, r.text)
        let data = try r.json()["data"]?.arrayValue ?? []
        XCTAssertEqual(data.count, 2)
        let want = try SentenceEncoder(folder: minilm).embed(texts)
        for (i, d) in data.enumerated() {
            let got = d["embedding"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? []
            XCTAssertEqual(got.count, want[i].count)
            XCTAssertLessThan(zip(got, want[i]).map { abs($0 - $1) }.max() ?? 1, 1e-6)
        }
        XCTAssertGreaterThan(try r.json()["usage"]?["prompt_tokens"]?.intValue ?? 0, 10)
        // With the adapter, the embeddings change.
        let adapted = try HTTPConnection.request(port: s.port, "POST", "/v1/embeddings", json: #"{"model": "topics", "input": "A cat sat on the mat."}"#)
        let a = try adapted.json()["data"]?.arrayValue?.first?["embedding"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? []
        XCTAssertGreaterThan(zip(a, want[0]).map { abs($0 - $1) }.max() ?? 0, 1e-4)
        // A prompt and a bottleneck adapter embed as the encoder with that adapter attached.
        for (name, path) in [("prompt", prompt), ("houlsby", bottleneck)] {
            let r = try HTTPConnection.request(port: s.port, "POST", "/v1/embeddings", json: #"{"model": "\#(name)", "input": ["A cat sat on the mat.", "Stocks fell sharply on Monday."]}"#)
            XCTAssertEqual(r.status, 200, r.text)
            var encoder = try SentenceEncoder(folder: minilm)
            let loaded = try AdapterMethods.open(path)
            try encoder.attach(virtualTokens: try loaded.virtualTokens(), sublayers: {
                var u = SublayerUpdates(); for site in loaded.sublayerUpdates() { u.set(site.update, layer: site.layer, site: site.site) }; return u
            }(), source: path)
            let expected = try encoder.embed(texts)
            for (i, d) in (try r.json()["data"]?.arrayValue ?? []).enumerated() {
                let got = d["embedding"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? []
                XCTAssertEqual(got.count, expected[i].count, name)
                XCTAssertLessThan(zip(got, expected[i]).map { abs($0 - $1) }.max() ?? 1, 1e-6, name)
                XCTAssertGreaterThan(zip(got, want[i]).map { abs($0 - $1) }.max() ?? 0, 1e-4, "\(name) should change the embedding")
            }
        }

        let c = try HTTPConnection.request(port: s.port, "POST", "/v1/classify", json: #"{"model": "topics", "input": ["A cat sat on the mat.", "Stocks fell sharply on Monday."]}"#)
        XCTAssertEqual(c.status, 200, c.text)
        var encoder = try BertModel(checkpoint: try Checkpoint(path: minilm))
        try encoder.attach(try AdapterMethods.open(seqcls).layerUpdates(dropout: 0), source: seqcls)
        let classifier = try Evaluation.classifier(encoder: encoder, tokenizer: try TokenizerLoader.load(model: minilm), head: seqcls)
        let logits = try classifier.model.logits(texts)
        for (i, d) in (try c.json()["data"]?.arrayValue ?? []).enumerated() {
            let l = logits[i], m = l.max()!, e = l.map { exp(Double($0 - m)) }, z = e.reduce(0, +)
            let best = l.indices.max { l[$0] < l[$1] }!
            XCTAssertEqual(d["label"]?.stringValue, classifier.labels[best])
            let probs = d["probabilities"]?.objectValue ?? []
            XCTAssertEqual(probs.map(\.0), classifier.labels)
            for (k, p) in probs.enumerated() { XCTAssertEqual(p.1.doubleValue ?? -1, e[k] / z, accuracy: 1e-5) }
        }
        // The base has no classifier; generation endpoints need a causal LM.
        XCTAssertEqual(try HTTPConnection.request(port: s.port, "POST", "/v1/classify", json: #"{"model": "minilm", "input": "x"}"#).status, 400)
        XCTAssertEqual(try HTTPConnection.request(port: s.port, "POST", "/v1/completions", json: #"{"model": "minilm", "prompt": "x"}"#).status, 404)
    }
}

/// The server's bounds: KV-cache memory, the waiting queue, adapters kept in memory.
final class ServeLimitsTests: XCTestCase {
    func testMemoryQueueAndAdapterBounds() throws {
        _ = try fetchedSmolLM2GGUF()
        let dir = try temporaryDirectory(self)
        for name in ServeTests.adapterFixtures { try FileManager.default.copyItem(atPath: referenceRoot + "/models/" + name, toPath: dir + "/" + name) }
        let s = try ServerProcess(graft: graftExecutable(Self.self),
                                  arguments: ["--model", "smollm2", "--adapters", dir, "--max-batch", "1", "--max-queue", "0", "--max-adapters", "1", "--kv-cache-mb", "64"])
        defer { s.stop() }
        func post(_ json: String) throws -> HTTPConnection.Response { try HTTPConnection.request(port: s.port, "POST", "/v1/completions", json: json) }
        // More KV cache than the whole budget (SmolLM2: 45 KB a position, 64 MB ≈ 1,450 positions): refused, not queued forever.
        let huge = try post(#"{"model": "smollm2", "prompt": "Hi", "max_tokens": 4000}"#)
        XCTAssertEqual(huge.status, 400, huge.text)
        XCTAssertEqual(try huge.json()["error"]?["code"]?.stringValue, "kv_cache_exceeded")
        // One running (--max-batch 1), none may wait (--max-queue 0): the next gets 429 with Retry-After.
        let running = try HTTPConnection(port: s.port)
        try running.send("POST", "/v1/completions", body: Array(#"{"model": "smollm2", "prompt": "Once", "max_tokens": 400, "ignore_eos": true, "stream": true}"#.utf8))
        XCTAssertEqual(try running.head().status, 200)
        _ = try running.nextChunk()
        let refused = try post(#"{"model": "smollm2", "prompt": "Hi", "max_tokens": 2}"#)
        XCTAssertEqual(refused.status, 429, refused.text)
        XCTAssertNotNil(refused.headers["retry-after"])
        XCTAssertEqual(try refused.json()["error"]?["type"]?.stringValue, "rate_limit_error")
        running.hangUp()
        // --max-adapters 1: each adapter in turn is read again from disk; results do not change.
        var first: [String: JSONValue] = [:]
        for round in 0..<2 {
            for name in ServeTests.adapterFixtures {
                // The abandoned request leaves at its next token boundary; until then the one row is taken (429).
                let body = #"{"model": "\#(name)", "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}"#
                var r = try post(body)
                let deadline = Date().addingTimeInterval(30)
                while r.status == 429 && Date() < deadline { usleep(10_000); r = try post(body) }
                XCTAssertEqual(r.status, 200, r.text)
                let text = try r.json()["choices"]?.arrayValue?.first?["text"]
                if round == 0 { first[name] = text } else { XCTAssertEqual(text, first[name], name) }
                XCTAssertEqual(try HTTPConnection.request(port: s.port, "GET", "/health").json()["adapters_in_memory"]?.intValue, 1)
            }
        }
    }
}

/// `--chat-template FILE`: /v1/chat/completions renders with it, and a conversation it refuses is a 400 with its message.
final class ServeChatTemplateTests: XCTestCase {
    func testChosenTemplateRendersAndRefuses() throws {
        let gguf = try fetchedSmolLM2GGUF()
        let s = try ServerProcess(graft: graftExecutable(Self.self),
                                  arguments: ["--model", "smollm2", "--chat-template", referenceRoot + "/chat-templates/templates/gemma-2.jinja"])
        defer { s.stop() }
        func chat(_ messages: String) throws -> HTTPConnection.Response {
            try HTTPConnection.request(port: s.port, "POST", "/v1/chat/completions", json: #"{"model": "smollm2", "messages": \#(messages), "max_tokens": 1}"#)
        }
        let ok = try chat(#"[{"role": "user", "content": " Hi "}]"#)
        XCTAssertEqual(ok.status, 200, ok.text)
        // Gemma's turns around SmolLM2's bos_token, the content trimmed; the tokenizer adds nothing of its own.
        let tokenizer = try ByteLevelBPETokenizer.fromGGUF(try GGUFFile(path: gguf))
        let rendered = "<|im_start|><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        let want = tokenizer.encode(rendered, addSpecialTokens: false).count
        XCTAssertEqual(try ok.json()["usage"]?["prompt_tokens"]?.intValue.map { Int($0) }, want)
        let refused = try chat(#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]"#)
        XCTAssertEqual(refused.status, 400, refused.text)
        XCTAssertEqual(try refused.json()["error"]?["param"]?.stringValue, "messages")
        XCTAssertEqual(try refused.json()["error"]?["message"]?.stringValue, "the model's chat template refuses these messages: System role not supported")
        XCTAssertEqual(try HTTPConnection.request(port: s.port, "GET", "/health").status, 200)
    }
}

/// `"model": "auto"`: Arrow routing among the served LoRA adapters, equal to `graft generate --route arrow`.
final class ServeRoutingTests: XCTestCase {
    func testAutoRoutesLikeGraftGenerate() throws {
        _ = try fetchedSmolLM2GGUF()
        let dir = try temporaryDirectory(self)
        for e in 0..<3 {
            try FileManager.default.copyItem(atPath: referenceRoot + "/models/arrow-smollm2/expert\(e)", toPath: dir + "/expert\(e)")
        }
        try FileManager.default.copyItem(atPath: referenceRoot + "/models/grad-smollm2-ia3", toPath: dir + "/ia3")  // left out by routing
        let s = try ServerProcess(graft: graftExecutable(Self.self), arguments: ["--model", "smollm2", "--adapters", dir, "--route-top-k", "2"])
        defer { s.stop() }
        let prompt = "Write one sentence about the sea."
        let r = try HTTPConnection.request(port: s.port, "POST", "/v1/completions",
                                           json: #"{"model": "auto", "prompt": "\#(prompt)", "max_tokens": 16, "temperature": 0}"#)
        XCTAssertEqual(r.status, 200, r.text)
        let text = try r.json()["choices"]?.arrayValue?.first?["text"]?.stringValue
        let (status, out, err) = try runGraft(Self.self, ["generate", "--model", "smollm2", "--route", "arrow", "--adapters", dir, "--route-top-k", "2",
                                                          "--prompt", prompt, "--max-tokens", "16", "--temperature", "0"])
        XCTAssertEqual(status, 0, err)
        XCTAssertEqual(text.map { $0 + "\n" }, out)
        // A routed request and a single adapter's share a batch: both still answer.
        let one = try HTTPConnection.request(port: s.port, "POST", "/v1/completions", json: #"{"model": "expert1", "prompt": "Hi", "max_tokens": 4}"#)
        XCTAssertEqual(one.status, 200, one.text)
    }
}

/// PHATGOOSE end to end: `graft gate` trains an adapter's gates (only its gates file changes), then
/// `graft generate --route phatgoose` and `graft serve --route phatgoose`'s "model": "auto" route alike.
final class PhatgooseCommandTests: XCTestCase {
    func testGateThenRoute() throws {
        _ = try fetchedSmolLM2GGUF()
        let dir = try temporaryDirectory(self)
        for e in 0..<3 {  // the Arrow fixture's LoRA adapters with the PHATGOOSE fixture's gates
            try FileManager.default.copyItem(atPath: referenceRoot + "/models/arrow-smollm2/expert\(e)", toPath: dir + "/expert\(e)")
            try FileManager.default.copyItem(atPath: referenceRoot + "/models/phatgoose-smollm2/expert\(e)/" + PhatgooseGates.fileName,
                                             toPath: dir + "/expert\(e)/" + PhatgooseGates.fileName)
        }
        try FileManager.default.copyItem(atPath: referenceRoot + "/models/arrow-smollm2/expert0", toPath: dir + "/ungated")  // left out
        let rows = (0..<6).map { #"{"prompt": "Review \#($0): a fine film. Sentiment:", "completion": " positive"}"# }
        try rows.joined(separator: "\n").write(toFile: dir + "/data.jsonl", atomically: true, encoding: .utf8)
        let adapterBytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/expert0/adapter_model.safetensors"))
        let before = try XCTUnwrap(try PhatgooseGates.read(adapter: dir + "/expert0"))
        let (status, _, err) = try runGraft(Self.self, ["gate", "--model", "smollm2", "--adapter", dir + "/expert0", "--data", dir + "/data.jsonl",
                                                       "--steps", "3", "--batch-size", "2"])
        XCTAssertEqual(status, 0, err)
        XCTAssertTrue(err.contains("training the gates of 60 modules"), err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/expert0/adapter_model.safetensors")), adapterBytes)
        let after = try XCTUnwrap(try PhatgooseGates.read(adapter: dir + "/expert0"))
        XCTAssertEqual(Set(after.keys), Set(before.keys))
        let moved = after.map { k, v in zip(v.array, before[k]!.array).map { abs($0 - $1) }.max()! }.max()!
        XCTAssertGreaterThan(moved, 1e-3, "three steps at 5e-3 move the gates")
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir + "/expert0").contains { $0.contains("partial") })

        let prompt = "Write one sentence about the sea."
        let (gs, out, gerr) = try runGraft(Self.self, ["generate", "--model", "smollm2", "--route", "phatgoose", "--adapters", dir,
                                                       "--prompt", prompt, "--max-tokens", "12", "--temperature", "0"])
        XCTAssertEqual(gs, 0, gerr)
        XCTAssertTrue(gerr.contains("ungated left out: no gates"), gerr)
        let s = try ServerProcess(graft: graftExecutable(Self.self), arguments: ["--model", "smollm2", "--adapters", dir, "--route", "phatgoose"])
        defer { s.stop() }
        let r = try HTTPConnection.request(port: s.port, "POST", "/v1/completions",
                                           json: #"{"model": "auto", "prompt": "\#(prompt)", "max_tokens": 12, "temperature": 0}"#)
        XCTAssertEqual(r.status, 200, r.text)
        XCTAssertEqual(try r.json()["choices"]?.arrayValue?.first?["text"]?.stringValue.map { $0 + "\n" }, out)

        // What cannot be gated or routed is refused with the reason.
        let (bad, _, badErr) = try runGraft(Self.self, ["gate", "--model", "smollm2", "--adapter", referenceRoot + "/models/grad-smollm2-ia3",
                                                        "--data", dir + "/data.jsonl", "--steps", "1"])
        XCTAssertNotEqual(bad, 0)
        XCTAssertTrue(badErr.contains("PHATGOOSE gates plain LoRA adapters; this one is ia3"), badErr)
        let lone = try temporaryDirectory(self)
        try FileManager.default.copyItem(atPath: dir + "/expert1", toPath: lone + "/expert1")
        let (one, _, oneErr) = try runGraft(Self.self, ["generate", "--model", "smollm2", "--route", "phatgoose", "--adapters", lone, "--prompt", "Hi", "--max-tokens", "1"])
        XCTAssertNotEqual(one, 0)
        XCTAssertTrue(oneErr.contains("needs at least two gated LoRA adapters"), oneErr)
    }
}

/// What a generation sends as text: whole UTF-8 characters only, nothing that may still become a stop
/// sequence, the text cut before one.
final class TextAssemblerTests: XCTestCase {
    func testStopSequenceSplitAcrossTokensIsHeldBackThenCut() {
        var t = TextAssembler(stops: ["END"])
        XCTAssertEqual(t.append(Array("Hello E".utf8)).0, "Hello ")  // "E" may start "END": held
        XCTAssertEqual(t.append(Array("N".utf8)).0, "")
        let (out, stopped) = t.append(Array("D and more".utf8))
        XCTAssertEqual(out, "")
        XCTAssertTrue(stopped)
        var u = TextAssembler(stops: ["END"])
        XCTAssertEqual(u.append(Array("an E".utf8)).0, "an ")
        XCTAssertEqual(u.append(Array("Xtra".utf8)).0, "EXtra")  // not the stop after all: released
        XCTAssertEqual(u.finish(), "")
    }

    func testCharactersSplitAcrossTokensWaitForTheirLastByte() {
        let euro = Array("€".utf8)  // 3 bytes
        var t = TextAssembler(stops: [])
        XCTAssertEqual(t.append([euro[0]]).0, "")
        XCTAssertEqual(t.append([euro[1]]).0, "")
        XCTAssertEqual(t.append([euro[2]] + Array("!".utf8)).0, "€!")
        XCTAssertEqual(t.append([0xF0, 0x9F]).0, "")  // half of a 4-byte emoji at the end
        XCTAssertEqual(t.finish(), "\u{FFFD}")  // an unfinished character is replaced, not dropped silently
        XCTAssertEqual(TextAssembler.completePrefix(Array("a€".utf8).dropLast()), 1)
        XCTAssertEqual(TextAssembler.completePrefix(Array("a€".utf8)), 4)
    }
}
