import GraftAPI
import Foundation
import GraftAdapters
import GraftEval
import GraftFormats
import GraftModels
import GraftTensor
import GraftText
import GraftTraining
import Hummingbird
import NIOCore

/// `graft serve`'s settings; each default is written here once.
public struct ServeOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// The name the base answers to in `model` (the adapters answer to theirs).
    public var modelName = "base"
    /// Adapter folders found directly under it are served by their folder names; run-time loads must lie under it.
    public var adaptersRoot: String?
    public var adapters: [(name: String, path: String)] = []
    public var allowAnyPath = false
    public var maxAdapters = 64
    public var maxBodyBytes = 4 << 20
    public var limits = GenerationEngine.Limits()
    /// How `"model": "auto"` routes among the LoRA adapters: Arrow, or PHATGOOSE (among those with gates).
    public var router = Router.arrow
    public var routing = ArrowSettings()
    public var phatgoose = PhatgooseSettings()
    public enum Router: String, Sendable, CaseIterable { case arrow, phatgoose }
    public init() {}
}

/// The model a server runs: a causal LM (completions and chat) or a sentence encoder (embeddings and
/// classification with sequence-classification adapters).
public enum ServedModel: Sendable {
    case causal(CausalLM)
    case encoder(SentenceEncoder)
}

/// An OpenAI-compatible HTTP server over one base model and many adapters (Hummingbird 2).
public final class GraftServer: Sendable {
    public let options: ServeOptions
    public let model: ServedModel
    public let registry: AdapterRegistry
    public let metrics = ServeMetrics()
    let engine: GenerationEngine?
    /// Encoder work (embeddings, classification) runs here, one request at a time, off Swift's
    /// cooperative threads (its products use every core already).
    private let encoderQueue = DispatchQueue(label: "graft-encoder")
    let created = Int64(Date().timeIntervalSince1970)
    /// Arrow's routed updates over the registry's LoRA adapters, for the registry generation they were built from.
    private let routed = Locked<(generation: Int, updates: [String: any LayerUpdate])?>(nil)

    /// Loads the adapters (those that fail are reported through `warn` and left out) and starts the engine.
    public init(model: ServedModel, options: ServeOptions, warn: @escaping @Sendable (String) -> Void = { _ in }) throws {
        var model = model
        if case var .causal(lm) = model {
            lm.model.packForBatches()  // batched decode steps: weights packed once, not by BLAS on every call
            model = .causal(lm)
        }
        self.model = model
        self.options = options
        let prepare: @Sendable (String, any LoadedAdapter) throws -> ServedAdapter
        switch model {
        case let .causal(lm): prepare = { name, a in try Self.prepare(name, a, layers: lm.model) }
        case let .encoder(enc): prepare = { name, a in try Self.prepare(name, a, layers: enc.model) }
        }
        registry = AdapterRegistry(root: options.adaptersRoot, allowAnyPath: options.allowAnyPath, capacity: options.maxAdapters, prepare: prepare)
        if let root = options.adaptersRoot {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
                throw ModelError("--adapters \(root): no such folder")
            }
            for (name, problem) in registry.scanRoot() { warn("adapter '\(name)' left out: \(problem)") }
        }
        for (name, path) in options.adapters { try registry.add(name: name, path: path, trusted: true) }
        if case let .causal(lm) = model {
            let e = GenerationEngine(lm: lm, limits: options.limits, metrics: metrics)
            e.start()
            engine = e
        } else {
            engine = nil
        }
    }

    /// An adapter fitted to the base: its linear-layer updates, its sublayer updates and its virtual
    /// tokens, each checked against the model (an error naming what does not fit).
    static func prepare<M: AdaptableModel>(_ name: String, _ a: any LoadedAdapter, layers: M) throws -> ServedAdapter {
        let virtualTokens = try a.virtualTokens()
        if let vt = virtualTokens, let why = vt.mismatch(layers.virtualTokenLayout) { throw ModelError("\(a.path): \(why)") }
        var sublayers = SublayerUpdates()
        for s in a.sublayerUpdates() {
            let count = layers.virtualTokenLayout.layers
            guard (0..<count).contains(s.layer) else { throw ModelError("\(a.path): layer \(s.layer) is not one of this model's \(count)") }
            guard sublayers[s.layer, s.site] == nil else { throw ModelError("\(a.path): layer \(s.layer)'s \(s.site.rawValue) site is updated twice") }
            sublayers.set(s.update, layer: s.layer, site: s.site)
        }
        let updates = try layers.fitted(a.layerUpdates(dropout: 0), source: a.path)
        let bytes = updates.values.reduce(0) { $0 + $1.parameters.reduce(0) { $0 + $1.value.count * 4 } }
            + sublayers.sites.values.reduce(0) { $0 + $1.values.reduce(0) { $0 + $1.parameters.reduce(0) { $0 + $1.value.count * 4 } } }
            + (virtualTokens.map { ($0.values.count + ($0.offsets?.count ?? 0)) * 4 } ?? 0)
        // The head read once here, not from disk on every /v1/classify.
        let classifier = try a.classificationHead().map { w, b in
            (head: Linear(weight: FloatBuffer(w), bias: b.map { FloatBuffer($0) }, inFeatures: w.shape[1], outFeatures: w.shape[0]),
             labels: try Evaluation.labels(adapterPath: a.path, classes: w.shape[0]).names)
        }
        return ServedAdapter(name: name, path: a.path, method: a.method, updates: updates, sublayers: sublayers, virtualTokens: virtualTokens,
                             bytes: bytes, classifier: classifier)
    }

    // MARK: - Running

    /// Serves until SIGTERM or SIGINT: then stops accepting, lets running requests finish, and returns.
    /// `onRunning` receives the bound port (useful with port 0).
    public func run(onRunning: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = Router()
        router.add(middleware: OpenAIErrorMiddleware(maxBodyBytes: options.maxBodyBytes, routes: [
            "/health": ["GET"], "/metrics": ["GET"], "/v1/models": ["GET"], "/v1/completions": ["POST"], "/v1/chat/completions": ["POST"],
            "/v1/embeddings": ["POST"], "/v1/classify": ["POST"], "/v1/adapters": ["POST"], "/v1/adapters/:name": ["DELETE"],
        ]))
        router.get("/health") { _, _ in self.json(self.health()) }
        router.get("/metrics") { _, _ in
            self.metrics.adaptersLoaded.set(Double(self.registry.loadedCount))  // read when asked for, not tracked
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: self.metrics.text())))
        }
        router.get("/v1/models") { _, _ in self.json(self.modelList()) }
        router.post("/v1/completions") { req, _ in try await self.generate(req, chat: false) }
        router.post("/v1/chat/completions") { req, _ in try await self.generate(req, chat: true) }
        router.post("/v1/embeddings") { req, _ in try await self.embeddings(req) }
        router.post("/v1/classify") { req, _ in try await self.classify(req) }
        router.post("/v1/adapters") { req, _ in try await self.loadAdapter(req) }
        router.delete("/v1/adapters/:name") { _, ctx in try self.unloadAdapter(ctx.parameters.require("name")) }
        let app = Application(router: router, configuration: .init(address: .hostname(options.host, port: options.port), serverName: "graft"),
                              onServerRunning: { channel in onRunning(channel.localAddress?.port ?? 0) })
        try await app.runService()
        engine?.drain()
    }

    func json(_ v: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: v.serialized() + "\n")))
    }

    func body(_ req: Request) async throws -> [UInt8] {
        if let length = req.headers[.contentLength].flatMap(Int.init), length > options.maxBodyBytes {
            throw APIError.invalid("the request body (\(length) bytes) is larger than this server's limit of \(options.maxBodyBytes) bytes (--max-body-mb)", code: "request_too_large", status: 413)
        }
        do {
            var buffer = try await req.body.collect(upTo: options.maxBodyBytes)
            return buffer.readBytes(length: buffer.readableBytes) ?? []
        } catch is NIOTooManyBytesError {
            throw APIError.invalid("the request body is larger than this server's limit of \(options.maxBodyBytes) bytes (--max-body-mb)", code: "request_too_large", status: 413)
        }
    }

    func health() -> JSONValue {
        let load = engine?.load ?? (queued: 0, running: 0)
        return .object([("status", .string("ok")), ("model", .string(options.modelName)), ("queued", .int(Int64(load.queued))),
                        ("running", .int(Int64(load.running))), ("adapters", .int(Int64(registry.names.count))),
                        ("adapters_in_memory", .int(Int64(registry.loadedCount)))])
    }

    func modelList() -> JSONValue {
        func entry(_ id: String, parent: String?) -> JSONValue {
            var o: [(String, JSONValue)] = [("id", .string(id)), ("object", .string("model")), ("created", .int(created)), ("owned_by", .string("graft"))]
            if let parent { o.append(("parent", .string(parent))) }
            return .object(o)
        }
        return .object([("object", .string("list")),
                        ("data", .array([entry(options.modelName, parent: nil)] + registry.names.map { entry($0, parent: options.modelName) }))])
    }

    // MARK: - Adapters

    /// The adapters a request asks for: `adapters` (several, weighted), else the one `model` names, else none.
    func mix(model: String, adapters: [(name: String, scale: Float)]) throws -> (AdapterMix, String) {
        if !adapters.isEmpty {
            let parts = try adapters.map { a -> AdapterMix.Part in
                guard let s = try registry.adapter(a.name) else { throw APIError.notFound("no adapter named '\(a.name)' (GET /v1/models lists them)", param: "adapters") }
                if s.virtualTokens != nil && (adapters.count > 1 || a.scale != 1) {
                    throw APIError.invalid("adapter '\(a.name)' (\(s.method)) puts virtual tokens before the text: it cannot be weighted or composed with others (name it in 'model' instead)", param: "adapters")
                }
                return s.part(scale: a.scale)
            }
            // Metrics label composed requests by their adapters' names only (scales would make unbounded series).
            return (AdapterMix(parts), "composed:" + adapters.map(\.name).sorted().joined(separator: "+"))
        }
        if model == options.modelName { return (.none, options.modelName) }
        if model == "auto" {
            let (generation, updates) = try routedUpdates()
            return (AdapterMix([AdapterMix.Part(name: "auto", id: "auto#\(generation)", updates: updates, scale: 1)]), "auto")
        }
        guard let s = try registry.adapter(model) else {
            throw APIError.notFound("the model '\(model)' does not exist: this server runs '\(options.modelName)' and its adapters (GET /v1/models lists them)")
        }
        return (AdapterMix([s.part(scale: 1)]), s.name)
    }

    /// `"model": "auto"`: routing per token among every plain LoRA adapter served (other methods are left
    /// out; PHATGOOSE also leaves out adapters without gates), rebuilt when adapters are added or removed.
    func routedUpdates() throws -> (generation: Int, updates: [String: any LayerUpdate]) {
        let (names, generation) = registry.snapshot
        if let cached = routed.value, cached.generation == generation { return cached }
        let router = options.router
        let experts = try names.compactMap { name -> (name: String, updates: [String: any LayerUpdate], gates: [String: FloatBuffer])? in
            guard let a = try registry.adapter(name), ArrowRouting.isPlainLoRA(a.updates) else { return nil }
            guard router == .phatgoose else { return (name, a.updates, [:]) }
            guard let gates = try? PhatgooseGates.read(adapter: a.path) else { return nil }
            return (name, a.updates, gates)
        }
        let updates: [String: any LayerUpdate]
        do {
            switch router {
            case .arrow: updates = try ArrowRouting.updates(experts: experts.map { ($0.name, $0.updates) }, settings: options.routing)
            case .phatgoose: updates = try PhatgooseRouting.updates(experts: experts, settings: options.phatgoose)
            }
        } catch {
            throw APIError.invalid("\"model\": \"auto\" routes among the served LoRA adapters with \(router == .arrow ? "Arrow" : "PHATGOOSE"): \(error)",
                                   param: "model", code: "routing_unavailable")
        }
        routed.value = (generation, updates)
        return (generation, updates)
    }

    func loadAdapter(_ req: Request) async throws -> Response {
        let load = try AdapterLoadRequest.parse(try await body(req))
        let name = load.name, path = load.path
        let registry = self.registry
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            encoderQueue.async { c.resume(with: Result { try registry.add(name: name, path: path) }) }
        }
        metrics.request(endpoint: "adapters", adapter: name, status: 201)
        return json(.object([("id", .string(name)), ("object", .string("model")), ("parent", .string(options.modelName))]), status: .created)
    }

    func unloadAdapter(_ name: String) throws -> Response {
        guard registry.remove(name) else { throw APIError.notFound("no adapter named '\(name)'", param: "name") }
        return json(.object([("id", .string(name)), ("object", .string("model")), ("deleted", .bool(true))]))
    }

    // MARK: - Generation

    func generate(_ req: Request, chat: Bool) async throws -> Response {
        let endpoint = chat ? "chat_completions" : "completions"
        let r = try GenerationRequest.parse(try await body(req), chat: chat)
        guard let engine, case let .causal(lm) = model else {
            throw APIError.notFound("this server runs a sentence encoder: \(chat ? "/v1/chat/completions" : "/v1/completions") needs a causal LM (use /v1/embeddings)", param: nil, code: "unsupported_endpoint")
        }
        let (mix, label) = try self.mix(model: r.model, adapters: r.adapters)
        let ids: [Int]
        var chatTooling: Tooling?
        switch r.prompt {
        case let .text(t): ids = lm.tokenizer.encode(t, addSpecialTokens: true)
        case let .tokens(t):
            guard let bad = t.first(where: { $0 < 0 || $0 >= lm.model.config.vocab }) else { ids = t; break }
            throw APIError.invalid("token id \(bad) is outside the vocabulary (0..<\(lm.model.config.vocab))", param: "prompt")
        case let .chat(m):
            guard let template = lm.chatTemplate else { throw APIError.invalid("this model has no chat template: use /v1/completions", param: "messages") }
            let prompt: String
            (prompt, chatTooling) = try Self.chatPrompt(m, request: r, template: template)
            ids = lm.tokenizer.encode(prompt, addSpecialTokens: false)
        }
        let tooling = chatTooling
        var request = r
        // A required Hermes call ends at its closing tag (what a grammar would allow), not at max_tokens.
        if let t = tooling, t.forced != nil, t.format == .hermes, !request.stop.contains("</tool_call>") { request.stop.append("</tool_call>") }
        let streams = try engine.submit(prompt: ids, request: request, mix: mix, label: label)
        let id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(24)
        let format = ResponseFormat(id: String(id), model: r.model, created: Int64(Date().timeIntervalSince1970), chat: chat, request: r, tokenizer: lm.tokenizer)
        let metrics = self.metrics
        if r.stream {
            metrics.request(endpoint: endpoint, adapter: label, status: 200)
            let body = ResponseBody { writer in
                if chat {
                    for i in streams.indices {
                        try await writer.write(ByteBuffer(string: format.sse(format.chunk(index: i, delta: .object([("role", .string("assistant")), ("content", .string(""))])))))
                    }
                }
                var usage = (prompt: 0, completion: 0)
                // With tools, each choice's text passes through a streamer that holds back a call until it is whole.
                var calls = streams.map { _ in tooling.map { ToolCallStreamer(format: $0.format, names: r.toolNames, forced: $0.forced) } }
                for try await (i, e) in Self.merged(streams) {
                    switch e {
                    case let .text(t, tokens):
                        let piece = calls[i] == nil ? t : calls[i]!.append(t)
                        if !piece.isEmpty || !tokens.isEmpty { try await writer.write(ByteBuffer(string: format.sse(format.piece(index: i, piece, tokens: tokens)))) }
                    case .finished(var reason, let p, let c):
                        if let (rest, found) = calls[i]?.finish() {
                            if !rest.isEmpty { try await writer.write(ByteBuffer(string: format.sse(format.piece(index: i, rest, tokens: [])))) }
                            if !found.isEmpty {
                                try await writer.write(ByteBuffer(string: format.sse(format.toolCallsChunk(index: i, found))))
                                reason = "tool_calls"
                            }
                        }
                        try await writer.write(ByteBuffer(string: format.sse(format.final(index: i, reason: reason))))
                        usage = (p, usage.completion + c)
                    case let .failed(err):
                        try await writer.write(ByteBuffer(string: format.sse(err.body)))
                    }
                }
                if r.includeUsage { try await writer.write(ByteBuffer(string: format.sse(format.usageChunk(prompt: usage.prompt, completion: usage.completion)))) }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
            }
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
        }
        var choices = [ResponseFormat.Choice](repeating: .init(), count: streams.count), usage = (prompt: 0, completion: 0)
        for try await (i, e) in Self.merged(streams) {
            switch e {
            case let .text(t, ts): choices[i].text += t; choices[i].tokens += ts
            case let .finished(reason, p, c): choices[i].finish = reason; usage = (p, usage.completion + c)
            case let .failed(err): metrics.request(endpoint: endpoint, adapter: label, status: err.code); throw err
            }
        }
        // A stream that ended without finishing (the server stopping under it) is no answer.
        guard choices.allSatisfy({ $0.finish != nil }) else { throw APIError(status: 503, message: "the generation was stopped before it finished", type: "server_error", retryAfter: 1) }
        if let tooling {
            for i in choices.indices {
                (choices[i].text, choices[i].toolCalls) = tooling.format.parse((tooling.forced ?? "") + choices[i].text, names: r.toolNames)
                if !choices[i].toolCalls.isEmpty { choices[i].finish = "tool_calls" }
            }
        }
        metrics.request(endpoint: endpoint, adapter: label, status: 200)
        return json(format.complete(choices, promptTokens: usage.prompt, completionTokens: usage.completion))
    }

    /// How a chat request's reply is read for tool calls: the format, and the text the reply was made to
    /// start with (a call, when `tool_choice` requires one).
    struct Tooling { let format: ToolCallFormat; let forced: String? }

    /// The prompt text of a chat request: the template rendered with the request's tools (a template that
    /// does not render tools gets them described in the system message, in Hermes' form), then the
    /// start of a call when `tool_choice` requires one; and how to read tool calls from the reply (nil
    /// without tools, or with `tool_choice` `none`).
    static func chatPrompt(_ messages: [JSONValue], request r: GenerationRequest, template: ChatTemplate) throws -> (String, Tooling?) {
        func render(_ messages: [JSONValue], tools: JSONValue?) throws -> String {
            do { return try template.render(messages: messages, addGenerationPrompt: true, tools: tools) } catch let e as JinjaError {
                throw APIError.invalid(e.raised ? "the model's chat template refuses these messages: \(e.message)" : "the model's chat template failed on these messages: \(e)", param: "messages")
            }
        }
        guard r.toolChoice != .none else { return (try render(messages, tools: nil), nil) }
        let prompt: String, format: ToolCallFormat
        if let f = ToolCallFormat.of(template: template.source) {
            format = f
            prompt = try render(messages, tools: .array(r.tools))
        } else {
            format = .hermes
            do { prompt = try render(ToolCallFormat.describing(r.tools, in: messages), tools: nil) } catch {
                // A template that refuses a system turn (Gemma 2) gets the tools in the first user message.
                prompt = try render(ToolCallFormat.describing(r.tools, in: messages, inUserMessage: true), tools: nil)
            }
        }
        let forced: String?
        switch r.toolChoice {
        case .required: forced = format.forcedStart(name: nil)
        case let .function(name): forced = format.forcedStart(name: name)
        case .auto, .none: forced = nil
        }
        return (prompt + (forced ?? ""), Tooling(format: format, forced: forced))
    }

    /// The events of several choices' streams as they come, each with its choice's index. The streams are
    /// read by child tasks: when the reader stops (an error, a client gone), they are cancelled and so
    /// are their generations.
    static func merged(_ streams: [AsyncStream<GenerationEvent>]) -> AsyncThrowingStream<(Int, GenerationEvent), Error> {
        return AsyncThrowingStream { c in
            let task = Task {
                await withTaskGroup(of: Void.self) { group in
                    for (i, stream) in streams.enumerated() { group.addTask { for await e in stream { c.yield((i, e)) } } }
                }
                c.finish()
            }
            c.onTermination = { _ in task.cancel() }
        }
    }

    // MARK: - Encoder endpoints

    /// The base encoder and the adapter a request names (nil: the base).
    func encoder(for model: String) throws -> (SentenceEncoder, ServedAdapter?) {
        guard case let .encoder(base) = self.model else {
            throw APIError.notFound("this server runs a causal LM: this endpoint needs a sentence encoder (a BERT model)", param: nil, code: "unsupported_endpoint")
        }
        if model == options.modelName { return (base, nil) }
        guard let a = try registry.adapter(model) else {
            throw APIError.notFound("the model '\(model)' does not exist: this server runs '\(options.modelName)' and its adapters (GET /v1/models lists them)")
        }
        return (base, a)
    }

    /// The encoder with the adapter's updates attached (the base's weights shared, not copied). Only on
    /// the encoder queue: attaching fits the adapter's shared update objects, which another request's
    /// pass may be using.
    static func attached(_ base: SentenceEncoder, _ a: ServedAdapter?) throws -> SentenceEncoder {
        guard let a else { return base }
        var enc = base
        try enc.attach(a.updates.map { ($0.key, $0.value) }, source: a.path)
        try enc.attach(virtualTokens: a.virtualTokens, sublayers: a.sublayers, source: a.path)
        return enc
    }

    func onEncoderQueue<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in encoderQueue.async { c.resume(with: Result { try work() }) } }
    }

    func embeddings(_ req: Request) async throws -> Response {
        let r = try TextsRequest.parse(try await body(req), field: "input")
        let (base, adapter) = try encoder(for: r.model)
        let (vectors, tokens) = try await onEncoderQueue {
            let enc = try Self.attached(base, adapter)
            return (try enc.embed(r.texts), r.texts.reduce(0) { $0 + enc.tokenize($1).count })
        }
        metrics.request(endpoint: "embeddings", adapter: r.model, status: 200)
        return json(.object([("object", .string("list")),
                             ("data", .array(vectors.enumerated().map { i, v in
                                 .object([("object", .string("embedding")), ("index", .int(Int64(i))), ("embedding", .array(v.map { .double(Double($0)) }))])
                             })),
                             ("model", .string(r.model)),
                             ("usage", .object([("prompt_tokens", .int(Int64(tokens))), ("total_tokens", .int(Int64(tokens)))]))]))
    }

    func classify(_ req: Request) async throws -> Response {
        let r = try TextsRequest.parse(try await body(req), field: "input")
        let (base, adapter) = try encoder(for: r.model)
        guard let adapter, let classifier = adapter.classifier else {
            throw APIError.invalid("classification needs a sequence-classification adapter in 'model' (one with a saved classifier head)", param: "model")
        }
        let logits = try await onEncoderQueue { () -> [[Float]] in
            let enc = try Self.attached(base, adapter)
            let model = try BertForSequenceClassification(encoder: enc.model, tokenizer: enc.tokenizer, head: classifier.head)
            return try model.logits(ids: r.texts.map { enc.tokenize($0) })
        }
        metrics.request(endpoint: "classify", adapter: r.model, status: 200)
        let labels = classifier.labels
        return json(.object([("object", .string("list")), ("model", .string(r.model)),
                             ("data", .array(logits.enumerated().map { i, l in
                                 var p = l
                                 p.withUnsafeMutableBufferPointer { Activation.softmaxRows($0.baseAddress!, rows: 1, width: $0.count) }
                                 let best = l.indices.max { l[$0] < l[$1] } ?? 0
                                 return .object([("index", .int(Int64(i))), ("label", .string(labels[best])),
                                                 ("probabilities", .object(zip(labels, p).map { ($0, .double(Double($1))) }))])
                             }))]))
    }
}

/// A value shared between threads, behind a lock.
public final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    public init(_ v: T) { self.v = v }
    public var value: T {
        get { lock.lock(); defer { lock.unlock() }; return v }
        set { lock.lock(); v = newValue; lock.unlock() }
    }
}
