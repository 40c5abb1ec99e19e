import ArgumentParser
import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftServe
import GraftText

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a base model and many adapters behind an OpenAI-compatible HTTP API.",
        discussion: """
        A causal LM (a Llama GGUF or HF folder) serves POST /v1/completions and /v1/chat/completions
        (streamed as server-sent events with "stream": true); a sentence encoder (a BERT folder) serves
        POST /v1/embeddings and /v1/classify (with sequence-classification adapters). Both serve
        GET /v1/models, /health and /metrics (Prometheus), POST /v1/adapters {"name", "path"} and
        DELETE /v1/adapters/NAME.

        Choose an adapter per request with the OpenAI "model" field (the base answers to --name), or
        compose several with weights: "adapters": [{"name": "a", "scale": 0.5}, {"name": "b", "scale": 0.5}],
        or "model": "auto" to route each token among the served LoRA adapters: with Arrow (as PEFT's
        ArrowConfig: --route-top-k, --route-temperature) or, with --route phatgoose, by the PHATGOOSE gates
        that graft gate trains beside each adapter.
        Requests for different adapters share each batched pass: the base product once for every row,
        each adapter's update on its own rows. Every adapter method Graft reads is served: those that
        update linear layers (LoRA, DoRA, IA³, VeRA, AdaLoRA, …), bottleneck adapters (on their own
        rows), prompt and prefix adapters (each request starts with its adapter's virtual tokens).

        Chat requests may carry OpenAI "tools" and "tool_choice": the reply's calls come back as
        "tool_calls", read in the model family's format (Hermes/Qwen, Mistral, Llama 3). "n" asks for
        several choices (choice i sampled with seed + i).

        SIGTERM or Ctrl-C stops accepting requests, lets running ones finish, then exits.

        Examples:
          graft serve --model smollm2 --adapters runs/adapters --port 8080
          curl -s localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\
            -d '{"model": "sentiment", "messages": [{"role": "user", "content": "Great film!"}]}'
          graft serve --model minilm --adapter topics=runs/topics-lora
        """)

    @Option(help: "A .gguf file, an HF folder (Llama or BERT), or a fetched model's short name (smollm2, minilm).")
    var model: String

    @Option(help: "The name the base answers to in requests' \"model\" field (default: --model's last path component).")
    var name: String?

    @Option(help: "A folder of PEFT adapter folders, each served under its folder name; run-time loads must come from it.")
    var adapters: String?

    @Option(name: .customLong("adapter"), help: "NAME=PATH: serve one more adapter folder under NAME (repeatable).")
    var extraAdapters: [String] = []

    @Flag(help: "Let POST /v1/adapters load from any path, not only under --adapters.")
    var allowAnyPath = false

    @Option(help: "Address to listen on (0.0.0.0 for every interface).")
    var host = ServeOptions().host

    @Option(help: "Port to listen on (0: any free port, printed at start).")
    var port = ServeOptions().port

    @Option(help: "Adapters kept in memory at most; the least recently used is dropped and read again when asked for.")
    var maxAdapters = ServeOptions().maxAdapters

    @Option(help: "Requests decoded together in one batched pass at most.")
    var maxBatch = GenerationEngine.Limits().maxBatch

    @Option(help: "KV-cache memory for all running requests, in MB; each reserves (prompt + max_tokens) positions when it starts, and waits while that does not fit.")
    var kvCacheMb = GenerationEngine.Limits().kvBudgetBytes >> 20

    @Option(help: "Requests waiting for a batch slot at most; more get 429 with Retry-After.")
    var maxQueue = GenerationEngine.Limits().maxQueue

    @Option(help: "Largest request body accepted, in MB (larger: 413).")
    var maxBodyMb = ServeOptions().maxBodyBytes >> 20

    @Option(help: "How \"model\": \"auto\" routes each token among the served LoRA adapters: arrow (training-free) or phatgoose (among the adapters with gates from graft gate).")
    var route = ServeOptions().router.rawValue

    @Option(help: "Adapters mixed per token by \"model\": \"auto\" (default: \(ArrowSettings().topK) with arrow, \(PhatgooseSettings().topK) with phatgoose).")
    var routeTopK: Int?

    @Option(help: "Softmax temperature of Arrow's routing weights.")
    var routeTemperature = ArrowSettings().temperature

    @Flag(help: "Decode with 8-bit activations and integer dot products, as llama.cpp does (faster; logits move by up to a few tenths).")
    var int8Decode = false

    @Option(help: ArgumentHelp("Chat template for /v1/chat/completions instead of the model's: a built-in name (\(ChatTemplate.builtins.keys.sorted().joined(separator: ", "))) or a Jinja file.", valueName: "name-or-file"))
    var chatTemplate: String?

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be 0–65535") }
        if maxAdapters < 1 { throw ValidationError("--max-adapters must be at least 1") }
        if maxBatch < 1 { throw ValidationError("--max-batch must be at least 1") }
        if kvCacheMb < 1 { throw ValidationError("--kv-cache-mb must be at least 1") }
        if maxQueue < 0 { throw ValidationError("--max-queue must be ≥ 0") }
        if maxBodyMb < 1 { throw ValidationError("--max-body-mb must be at least 1") }
        if ServeOptions.Router(rawValue: route) == nil { throw ValidationError("--route: unknown '\(route)' (supported: arrow, phatgoose)") }
        if (routeTopK ?? 1) < 1 || !(routeTemperature > 0) { throw ValidationError("--route-top-k must be at least 1 and --route-temperature above 0") }
        for a in extraAdapters where !a.contains("=") { throw ValidationError("--adapter '\(a)': expected NAME=PATH") }
        if let t = chatTemplate, ChatTemplate.builtins[t] == nil, !FileManager.default.fileExists(atPath: t) {
            throw ValidationError("--chat-template: '\(t)' is neither a built-in template (\(ChatTemplate.builtins.keys.sorted().joined(separator: ", "))) nor a file")
        }
    }

    func run() throws {
        let path = try ModelLocator.resolve(model)
        var options = ServeOptions()
        options.host = host; options.port = port
        options.modelName = name ?? (model.contains("/") ? ((path as NSString).lastPathComponent as NSString).deletingPathExtension : model)
        options.adaptersRoot = adapters
        options.adapters = extraAdapters.map { a in
            let i = a.firstIndex(of: "=")!
            return (String(a[..<i]), String(a[a.index(after: i)...]))
        }
        options.allowAnyPath = allowAnyPath
        options.maxAdapters = maxAdapters
        options.maxBodyBytes = maxBodyMb << 20
        options.limits.maxBatch = maxBatch
        options.limits.kvBudgetBytes = kvCacheMb << 20
        options.limits.maxQueue = maxQueue
        options.router = ServeOptions.Router(rawValue: route)!
        options.routing.topK = routeTopK ?? options.routing.topK
        options.phatgoose.topK = routeTopK ?? options.phatgoose.topK
        options.routing.temperature = routeTemperature
        printErr("loading \(path)")
        let served: ServedModel
        if path.hasSuffix(".gguf") || (try? Checkpoint(path: path).config())??.modelType == "llama" {
            var lm = try CausalLM(path: path)
            if int8Decode { lm.model.decodeArithmetic = .int8 }
            if let t = chatTemplate { lm.chatTemplate = try ChatTemplate(named: t, specialTokens: lm.chatTemplate?.specialTokens ?? [:]) }
            served = .causal(lm)
        } else {
            served = .encoder(try SentenceEncoder(folder: path))
        }
        let server = try GraftServer(model: served, options: options, warn: { printErr("warning: \($0)") })
        let names = server.registry.names
        let host = self.host, baseName = options.modelName
        let done = DispatchSemaphore(value: 0)
        let failure = Locked<(any Error)?>(nil)
        Task {
            do {
                try await server.run { port in
                    // One line on standard output, for scripts (and the tests) to read the port from.
                    FileHandle.standardOutput.write(Data("listening on http://\(host):\(port)\n".utf8))
                    printErr("serving '\(baseName)' and \(names.count) adapter\(names.count == 1 ? "" : "s")\(names.isEmpty ? "" : ": " + names.prefix(8).joined(separator: ", ") + (names.count > 8 ? ", …" : ""))")
                }
            } catch {
                failure.value = error
            }
            done.signal()
        }
        done.wait()
        if let e = failure.value { throw e }
        printErr("stopped")
    }
}
