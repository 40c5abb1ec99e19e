import ArgumentParser
import Foundation
import GraftFormats
import GraftModels
import GraftText
import GraftAdapters
import GraftTensor

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Logits at the last position of a text (a debugging tool, like transformers' model(ids).logits[-1]).",
        discussion: """
        Examples:
          graft logits --model smollm2 "The capital of France is"        # top 10 next tokens
          graft logits --model smollm2 --json "The capital of France is" > logits.json
        """)

    @Option(help: "A .gguf file, an HF Llama folder, or a fetched model's short name (smollm2).")
    var model: String

    @Flag(help: "Print all logits as JSON.")
    var json = false

    @Option(help: "Show this many top tokens (without --json).")
    var top: Int = 10

    @Option(help: "An HF PEFT adapter folder (LoRA, DoRA, IA³), applied without fusing.")
    var adapter: String?

    @Argument(help: "The text (no special tokens are added).")
    var text: String

    func run() throws {
        var lm = try CausalLM(path: try ModelLocator.resolve(model))
        if let a = adapter {
            try lm.model.attach(AdapterMethods.open(a))
        }
        let ids = lm.tokenizer.encode(text, addSpecialTokens: true)
        guard !ids.isEmpty else { throw ValidationError("the text encodes to no tokens") }
        var cache = lm.model.makeCache()
        let logits = try lm.model.forward(ids, cache: &cache)[0]
        if json {
            print(JSONValue.object([("ids", .array(ids.map { .int(Int64($0)) })), ("logits", .array(logits.map { .double(Double($0)) }))]).serialized())
            return
        }
        for (i, v) in logits.enumerated().sorted(by: { $0.element > $1.element }).prefix(top) {
            print(String(format: "%6d  %9.4f  %@", i, v, String(reflecting: lm.tokenizer.decode([i], skipSpecialTokens: false))))
        }
    }
}

/// Options shared by `generate` and `chat`.
struct LMOptions: ParsableArguments {
    @Option(help: "A .gguf file, an HF Llama folder, or a fetched model's short name (smollm2).")
    var model: String

    @Option(help: "An HF PEFT adapter folder (LoRA, DoRA, IA³), applied without fusing.")
    var adapter: String?

    @Option(help: "Route each token among the LoRA adapters in --adapters: arrow (training-free, as PEFT's ArrowConfig) or phatgoose (the gates graft gate trains).")
    var route: String?

    @Option(help: "The folder of adapter folders --route chooses among.")
    var adapters: String?

    @Option(help: "Adapters mixed per token (default: \(ArrowSettings().topK) with --route arrow, \(PhatgooseSettings().topK) with phatgoose).")
    var routeTopK: Int?

    @Option(help: "Softmax temperature of --route arrow's weights.")
    var routeTemperature = ArrowSettings().temperature

    @Option(help: "Most tokens to generate.")
    var maxTokens: Int = 256

    @Option(help: "Sampling temperature (0 = greedy).")
    var temperature: Float = 0

    @Option(help: "Sample among the k most likely tokens (0 = all).")
    var topK: Int = 40

    @Option(help: "Sample among the tokens whose probabilities add up to p.")
    var topP: Float = 0.95

    @Option(help: "Seed of the sampler.")
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("Chat template to use instead of the model's: a built-in name (\(ChatTemplate.builtins.keys.sorted().joined(separator: ", "))) or a Jinja file, as HF chat templates are written.", valueName: "name-or-file"))
    var chatTemplate: String?

    @Flag(help: "Print prompt and generation speed (tokens/s) on stderr, as llama.cpp does.")
    var stats = false

    @Flag(help: "Decode with 8-bit activations and integer dot products, as llama.cpp does: ~1.7× faster, but logits move by up to a few tenths, which can change near-tied tokens.")
    var int8Decode = false

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1") }
        if temperature < 0 { throw ValidationError("--temperature must be ≥ 0") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
        if let r = route {
            guard r == "arrow" || r == "phatgoose" else { throw ValidationError("--route: unknown '\(r)' (supported: arrow, phatgoose)") }
            guard adapters != nil else { throw ValidationError("--route \(r) needs --adapters, a folder of LoRA adapter folders") }
            guard adapter == nil else { throw ValidationError("--route and --adapter exclude each other") }
        } else if adapters != nil {
            throw ValidationError("--adapters is the folder --route chooses among: give --route arrow or phatgoose too")
        }
        if (routeTopK ?? 1) < 1 || !(routeTemperature > 0) { throw ValidationError("--route-top-k must be at least 1 and --route-temperature above 0") }
        if let t = chatTemplate, ChatTemplate.builtins[t] == nil, !FileManager.default.fileExists(atPath: t) {
            throw ValidationError("--chat-template: '\(t)' is neither a built-in template (\(ChatTemplate.builtins.keys.sorted().joined(separator: ", "))) nor a file")
        }
    }

    var sampling: SamplingOptions {
        var s = SamplingOptions()
        s.temperature = temperature; s.topK = topK; s.topP = topP; s.seed = seed
        return s
    }

    func load() throws -> CausalLM {
        var lm = try CausalLM(path: try ModelLocator.resolve(model))
        if let a = adapter {
            try lm.model.attach(AdapterMethods.open(a))
        }
        if let route, let dir = adapters {
            // Every plain LoRA adapter folder in the folder (others are left out, as graft serve does);
            // PHATGOOSE also leaves out adapters without gates.
            let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
            var experts: [(name: String, updates: [String: any LayerUpdate], gates: [String: FloatBuffer])] = []
            for name in names where FileManager.default.fileExists(atPath: dir + "/" + name + "/adapter_config.json") {
                let a = try AdapterMethods.open(dir + "/" + name)
                let updates = try lm.model.fitted(a.layerUpdates(dropout: 0), source: a.path)
                guard ArrowRouting.isPlainLoRA(updates) else { printErr("--route \(route): \(name) (\(a.method)) left out: not plain LoRA"); continue }
                var gates: [String: FloatBuffer] = [:]
                if route == "phatgoose" {
                    guard let g = try PhatgooseGates.read(adapter: a.path) else { printErr("--route phatgoose: \(name) left out: no gates (graft gate trains them)"); continue }
                    gates = g
                }
                experts.append((name, updates, gates))
            }
            let routed: [String: any LayerUpdate]
            if route == "phatgoose" {
                var settings = PhatgooseSettings()
                settings.topK = routeTopK ?? settings.topK
                routed = try PhatgooseRouting.updates(experts: experts, settings: settings)
            } else {
                var settings = ArrowSettings()
                settings.topK = routeTopK ?? settings.topK; settings.temperature = routeTemperature
                routed = try ArrowRouting.updates(experts: experts.map { ($0.name, $0.updates) }, settings: settings)
            }
            try lm.model.attach(routed.map { ($0.key, $0.value) }, source: dir)
        }
        if int8Decode { lm.model.decodeArithmetic = .int8 }
        return lm
    }

    func template(_ lm: CausalLM) throws -> ChatTemplate {
        if let t = chatTemplate { return try ChatTemplate(named: t, specialTokens: lm.chatTemplate?.specialTokens ?? [:]) }
        guard let t = lm.chatTemplate else {
            throw ValidationError("this model has no chat template; pass --chat-template NAME or FILE (built in: \(ChatTemplate.builtins.keys.sorted().joined(separator: ", ")))")
        }
        return t
    }

    /// Streams tokens to standard output as complete UTF-8 characters.
    func stream(_ lm: CausalLM, prompt: [Int], ignoreEOS: Bool, stop: [String]) throws -> [Int] {
        var pending: [UInt8] = []
        let (ids, st) = try lm.generate(prompt: prompt, maxTokens: maxTokens, sampling: sampling, ignoreEOS: ignoreEOS, stop: stop) { id in
            pending += lm.tokenizer.bytes(of: id)
            // Print what decodes fully; keep an incomplete UTF-8 tail for the next token.
            var cut = pending.count
            while cut > 0 && cut > pending.count - 4 && (pending[cut - 1] & 0xC0) == 0x80 { cut -= 1 }
            if cut > 0 && pending[cut - 1] >= 0xC0 { cut -= 1 } else { cut = pending.count }
            if cut > 0 {
                FileHandle.standardOutput.write(Data(pending[0..<cut]))
                pending.removeFirst(cut)
            }
            return true
        }
        if !pending.isEmpty { FileHandle.standardOutput.write(Data(pending)) }
        if stats {
            printErr(String(format: "\nprompt eval: %d tokens, %.2f s, %.1f tokens/s", st.promptTokens, st.promptSeconds,
                            Double(st.promptTokens) / max(st.promptSeconds, 1e-9)))
            printErr(String(format: "generation:  %d tokens, %.2f s, %.1f tokens/s", st.generatedTokens, st.generateSeconds,
                            Double(max(st.generatedTokens - 1, 0)) / max(st.generateSeconds, 1e-9)))
        }
        return ids
    }
}

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a prompt, streamed to standard output.",
        discussion: """
        Examples:
          graft generate --model smollm2 --chat --prompt "What is the capital of France?"
          graft generate --model smollm2 --prompt "Once upon a time" --temperature 0.8 --seed 1 --max-tokens 64 --stats
        """)

    @OptionGroup var lm: LMOptions

    @Option(help: "The prompt (or '-' to read it from standard input).")
    var prompt: String

    @Flag(help: "Wrap the prompt as a user message in the model's chat template.")
    var chat = false

    @Flag(help: "Keep generating past the end-of-sequence token.")
    var ignoreEos = false

    @Option(help: "Stop when the output contains this string (repeatable).")
    var stop: [String] = []

    @Flag(help: "Drop the start of a prompt longer than the context instead of failing.")
    var truncate = false

    func run() throws {
        let model = try lm.load()
        var text = prompt
        if prompt == "-" { text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
        // A chat template writes the special tokens it wants (transformers encodes its text without adding any).
        if chat { text = try lm.template(model).render([ChatMessage(role: "user", content: text)]) }
        var ids = model.tokenizer.encode(text, addSpecialTokens: !chat)
        let room = model.model.config.contextLength - 1
        if ids.count > room {
            guard truncate else {
                throw ValidationError("the prompt has \(ids.count) tokens but the context holds \(model.model.config.contextLength); shorten it or pass --truncate")
            }
            ids = Array(ids.suffix(room))
        }
        _ = try lm.stream(model, prompt: ids, ignoreEOS: ignoreEos, stop: stop)
        print("")
    }
}

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with a model interactively (one line per message; /reset clears, /quit or Ctrl-D ends).")

    @OptionGroup var lm: LMOptions

    @Option(help: "A system message (default: the template's own).")
    var system: String?

    func run() throws {
        let model = try lm.load()
        let template = try lm.template(model)
        var messages: [ChatMessage] = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
        let initial = messages
        printErr("chatting with \(lm.model) — /reset to start over, /quit to leave")
        while true {
            FileHandle.standardError.write(Data("> ".utf8))
            guard let line = readLine() else { break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input == "/quit" || input == "/exit" { break }
            if input == "/reset" { messages = initial; continue }
            messages.append(ChatMessage(role: "user", content: input))
            let prompt: String
            do { prompt = try template.render(messages) } catch let e as JinjaError where e.raised {
                printErr("the chat template refuses this conversation: \(e.message)"); messages.removeLast(); continue
            }
            let ids = model.tokenizer.encode(prompt, addSpecialTokens: false)
            guard ids.count < model.model.config.contextLength else {
                printErr("the conversation no longer fits the context; /reset to start over"); messages.removeLast(); continue
            }
            let out = try lm.stream(model, prompt: ids, ignoreEOS: false, stop: [])
            print("")
            messages.append(ChatMessage(role: "assistant", content: model.tokenizer.decode(out, skipSpecialTokens: true)))
        }
    }
}
