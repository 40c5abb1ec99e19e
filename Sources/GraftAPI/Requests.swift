import Foundation
import GraftFormats
import GraftModels
import GraftText

/// What a request asks the model for, read from its JSON body and checked field by field: every error
/// names the field (`param`), as the OpenAI API does.
public struct GenerationRequest: Sendable {
    public enum Prompt: Sendable {
        case text(String)
        case tokens([Int])
        /// Messages as chat templates take them: role, content text, an assistant's `tool_calls` (arguments
        /// as JSON objects), a tool result's `tool_call_id`.
        case chat([JSONValue])
    }

    /// `tool_choice`: whether the reply may (`auto`), must (`required`, `function`) or must not call a tool.
    public enum ToolChoice: Sendable, Equatable {
        case none, auto, required
        case function(String)
    }

    /// The `model` field: the base's name, an adapter's, or `auto`.
    public var model: String
    /// `adapters: [{"name", "scale"}]`: several adapters composed with weights (overrides `model`'s adapter).
    public var adapters: [(name: String, scale: Float)] = []
    public var prompt: Prompt
    /// nil: as many as the context leaves (chat), 16 (completions, as OpenAI's default).
    public var maxTokens: Int?
    public var sampling = SamplingOptions()
    /// Whether `seed` was given (otherwise each request draws its own).
    public var seeded = false
    public var stop: [String] = []
    /// Choices to generate (`n`), each its own sequence; choice i samples with `seed` + i.
    public var n = 1
    /// `tools`: the functions the model may call (OpenAI tool objects, checked), and `tool_choice`.
    public var tools: [JSONValue] = []
    public var toolChoice = ToolChoice.auto
    /// The tools' names.
    public var toolNames: Set<String> { Set(tools.compactMap { $0["function"]?["name"]?.stringValue }) }
    /// Alternatives per token to report with their log-probabilities; nil: no log-probabilities.
    public var logprobs: Int?
    public var stream = false
    public var includeUsage = false
    /// Generate to `max_tokens` even past the end-of-sequence token (llama.cpp's `ignore_eos`).
    public var ignoreEOS = false

    public var isChat: Bool { if case .chat = prompt { return true }; return false }

    static let maxStops = 4, maxAlternatives = 20, maxChoices = 16, maxTools = 128

    /// Parses a body of `/v1/completions` (`chat: false`) or `/v1/chat/completions`.
    public static func parse(_ body: [UInt8], chat: Bool) throws -> GenerationRequest {
        let j = try parseObject(body)
        let model = try string(j, "model") ?? { throw APIError.invalid("'model' is required (the base's name, an adapter's, or \"auto\")", param: "model") }()
        var r: GenerationRequest
        if chat {
            guard let m = j["messages"] else { throw APIError.invalid("'messages' is required", param: "messages") }
            r = GenerationRequest(model: model, prompt: .chat(try messages(m)))
        } else {
            guard let p = j["prompt"] else { throw APIError.invalid("'prompt' is required", param: "prompt") }
            r = GenerationRequest(model: model, prompt: try prompt(p))
        }
        if let n = try int(j, "n") {
            guard (1...maxChoices).contains(n) else { throw APIError.invalid("'n' must be between 1 and \(maxChoices) (got \(n))", param: "n") }
            r.n = n
        }
        if let b = try int(j, "best_of"), b != r.n {
            throw APIError.invalid("'best_of' must equal 'n' if given (choices are not ranked: each is returned)", param: "best_of")
        }
        for k in ["presence_penalty", "frequency_penalty"] {
            if let v = try number(j, k), v != 0 { throw APIError.invalid("'\(k)' is not supported (only 0)", param: k) }
        }
        let maxKey = chat && j["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens"
        if let m = try int(j, maxKey) {
            guard m >= 1 else { throw APIError.invalid("'\(maxKey)' must be at least 1 (got \(m))", param: maxKey) }
            r.maxTokens = m
        } else if !chat {
            r.maxTokens = 16
        }
        let temperature = try number(j, "temperature") ?? 1
        guard (0...2).contains(temperature) else { throw APIError.invalid("'temperature' must be between 0 and 2 (got \(temperature))", param: "temperature") }
        r.sampling.temperature = Float(temperature)
        let topP = try number(j, "top_p") ?? 1
        guard topP > 0 && topP <= 1 else { throw APIError.invalid("'top_p' must be in (0, 1] (got \(topP))", param: "top_p") }
        r.sampling.topP = Float(topP)
        let topK = try int(j, "top_k") ?? 0
        guard topK >= 0 else { throw APIError.invalid("'top_k' must be ≥ 0 (0: all tokens)", param: "top_k") }
        r.sampling.topK = topK
        if let s = try int(j, "seed") {
            r.sampling.seed = UInt64(bitPattern: Int64(s)); r.seeded = true
        } else {
            r.sampling.seed = UInt64.random(in: 0...UInt64.max)
        }
        switch j["stop"] {
        case nil, .null?: break
        case let .string(s)?: r.stop = [s]
        case let .array(a)?:
            guard a.count <= maxStops else { throw APIError.invalid("at most \(maxStops) stop sequences", param: "stop") }
            r.stop = try a.map { v in guard let s = v.stringValue else { throw APIError.invalid("'stop' must be a string or an array of strings", param: "stop") }; return s }
        default: throw APIError.invalid("'stop' must be a string or an array of strings", param: "stop")
        }
        guard r.stop.allSatisfy({ !$0.isEmpty }) else { throw APIError.invalid("stop sequences must not be empty", param: "stop") }
        if chat {
            if try bool(j, "logprobs") == true {
                let top = try int(j, "top_logprobs") ?? 0
                guard (0...maxAlternatives).contains(top) else { throw APIError.invalid("'top_logprobs' must be between 0 and \(maxAlternatives)", param: "top_logprobs") }
                r.logprobs = top
            } else if j["top_logprobs"] != nil, j["top_logprobs"] != .null {
                throw APIError.invalid("'top_logprobs' needs 'logprobs': true", param: "top_logprobs")
            }
        } else if let l = try int(j, "logprobs") {
            guard (0...maxAlternatives).contains(l) else { throw APIError.invalid("'logprobs' must be between 0 and \(maxAlternatives)", param: "logprobs") }
            r.logprobs = l
        }
        r.stream = try bool(j, "stream") ?? false
        if let so = j["stream_options"], so != .null {
            guard case .object = so else { throw APIError.invalid("'stream_options' must be an object", param: "stream_options") }
            r.includeUsage = try bool(so, "include_usage", prefix: "stream_options.") ?? false
        }
        r.ignoreEOS = try bool(j, "ignore_eos") ?? false
        if chat { try r.parseTools(j) } else if j["tools"] != nil && j["tools"] != .null {
            throw APIError.invalid("'tools' needs /v1/chat/completions", param: "tools")
        }
        if let a = j["adapters"], a != .null {
            guard let list = a.arrayValue, !list.isEmpty, list.count <= 16 else {
                throw APIError.invalid("'adapters' must be a list of 1–16 {\"name\", \"scale\"} objects", param: "adapters")
            }
            r.adapters = try list.enumerated().map { i, v in
                guard case .object = v, let name = v["name"]?.stringValue else {
                    throw APIError.invalid("adapters[\(i)] needs a 'name' string", param: "adapters")
                }
                let scale = try number(v, "scale", prefix: "adapters[\(i)].") ?? 1
                guard scale.isFinite, abs(scale) <= 100 else { throw APIError.invalid("adapters[\(i)].scale must be a number in [-100, 100]", param: "adapters") }
                return (name, Float(scale))
            }
            guard Set(r.adapters.map(\.name)).count == r.adapters.count else { throw APIError.invalid("an adapter is listed twice in 'adapters'", param: "adapters") }
        }
        return r
    }

    static func parseObject(_ body: [UInt8]) throws -> JSONValue {
        let j: JSONValue
        do { j = try JSONValue.parse(body) } catch { throw APIError.invalid("the body is not valid JSON: \(error)", code: "invalid_json") }
        guard case .object = j else { throw APIError.invalid("the body must be a JSON object", code: "invalid_json") }
        return j
    }

    static func prompt(_ p: JSONValue) throws -> Prompt {
        switch p {
        case let .string(s): return .text(s)
        case let .array(a) where a.count == 1 && a[0].stringValue != nil: return .text(a[0].stringValue!)
        case let .array(a) where !a.isEmpty && a.allSatisfy({ if case .int = $0 { return true }; return false }):
            return .tokens(a.map { Int($0.intValue!) })
        case .array: throw APIError.invalid("'prompt' must be a string, a list of one string, or a list of token ids (one prompt per request)", param: "prompt")
        default: throw APIError.invalid("'prompt' must be a string or a list of token ids", param: "prompt")
        }
    }

    /// `tools` (function tools: a name of letters, digits, `_` or `-`, a description, JSON-schema
    /// parameters) and `tool_choice` (`none`, `auto`, `required`, or `{"type": "function", "function": {"name"}}`).
    mutating func parseTools(_ j: JSONValue) throws {
        if let t = j["tools"], t != .null {
            guard let list = t.arrayValue, list.count <= Self.maxTools else { throw APIError.invalid("'tools' must be a list of at most \(Self.maxTools) tools", param: "tools") }
            tools = try list.enumerated().map { i, tool in
                guard case .object = tool, tool["type"]?.stringValue == "function", let f = tool["function"], case .object = f else {
                    throw APIError.invalid("tools[\(i)] must be {\"type\": \"function\", \"function\": {\"name\", \"description\", \"parameters\"}}", param: "tools")
                }
                guard let name = f["name"]?.stringValue, (1...64).contains(name.count),
                      name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) else {
                    throw APIError.invalid("tools[\(i)].function.name must be 1–64 letters, digits, '_' or '-'", param: "tools")
                }
                if let d = f["description"], d != .null, d.stringValue == nil { throw APIError.invalid("tools[\(i)].function.description must be a string", param: "tools") }
                if let p = f["parameters"], p != .null { guard case .object = p else { throw APIError.invalid("tools[\(i)].function.parameters must be a JSON schema object", param: "tools") } }
                return tool
            }
            guard toolNames.count == tools.count else { throw APIError.invalid("two tools share a name", param: "tools") }
        }
        switch j["tool_choice"] {
        case nil, .null?: toolChoice = tools.isEmpty ? .none : .auto
        case .string("none")?: toolChoice = .none
        case .string("auto")?: toolChoice = .auto
        case .string("required")?: toolChoice = .required
        case let v? where v["type"]?.stringValue == "function":
            guard let name = v["function"]?["name"]?.stringValue else { throw APIError.invalid("tool_choice.function needs a 'name'", param: "tool_choice") }
            toolChoice = .function(name)
        default: throw APIError.invalid("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\"}}", param: "tool_choice")
        }
        if toolChoice != .none && tools.isEmpty { throw APIError.invalid("'tool_choice' needs 'tools'", param: "tool_choice") }
        if case let .function(name) = toolChoice, !toolNames.contains(name) {
            throw APIError.invalid("tool_choice names '\(name)', which is not in 'tools'", param: "tool_choice")
        }
    }

    /// The conversation as templates take it (`developer` is `system`; text parts joined; an assistant's
    /// tool calls with their arguments parsed; a tool result with its `tool_call_id`).
    static func messages(_ m: JSONValue) throws -> [JSONValue] {
        guard let list = m.arrayValue, !list.isEmpty else { throw APIError.invalid("'messages' must be a non-empty list", param: "messages") }
        return try list.enumerated().map { i, v in
            guard case .object = v, let role = v["role"]?.stringValue else { throw APIError.invalid("messages[\(i)] needs a 'role' string", param: "messages") }
            guard ["system", "user", "assistant", "developer", "tool"].contains(role) else {
                throw APIError.invalid("messages[\(i)].role '\(role)' is not supported (system, developer, user, assistant, tool)", param: "messages")
            }
            let content: String
            switch v["content"] {
            case let .string(s)?: content = s
            case let .array(parts)?:
                // The list form: text parts only.
                content = try parts.map { part in
                    guard part["type"]?.stringValue == "text", let t = part["text"]?.stringValue else {
                        throw APIError.invalid("messages[\(i)].content: only parts of type 'text' are supported", param: "messages")
                    }
                    return t
                }.joined()
            case .null? where role == "assistant", nil where role == "assistant": content = ""
            default: throw APIError.invalid("messages[\(i)] needs a 'content' string", param: "messages")
            }
            var out: [(String, JSONValue)] = [("role", .string(role == "developer" ? "system" : role)), ("content", .string(content))]
            if role == "assistant", let calls = v["tool_calls"], calls != .null {
                guard let list = calls.arrayValue else { throw APIError.invalid("messages[\(i)].tool_calls must be a list", param: "messages") }
                out.append(("tool_calls", .array(try list.enumerated().map { k, c in
                    guard let f = c["function"], let name = f["name"]?.stringValue else {
                        throw APIError.invalid("messages[\(i)].tool_calls[\(k)] needs function.name", param: "messages")
                    }
                    // Templates read the arguments as an object (`| tojson`); OpenAI sends them as a JSON string.
                    var args = f["arguments"] ?? .object([])
                    if let text = args.stringValue {
                        guard let parsed = try? JSONValue.parse(Array(text.utf8)) else {
                            throw APIError.invalid("messages[\(i)].tool_calls[\(k)].function.arguments is not JSON", param: "messages")
                        }
                        args = parsed
                    }
                    var call: [(String, JSONValue)] = [("type", .string("function")), ("function", .object([("name", .string(name)), ("arguments", args)]))]
                    if let id = c["id"]?.stringValue { call.insert(("id", .string(id)), at: 0) }
                    return .object(call)
                })))
            }
            if role == "tool" {
                if let id = v["tool_call_id"], id != .null {
                    guard let s = id.stringValue else { throw APIError.invalid("messages[\(i)].tool_call_id must be a string", param: "messages") }
                    out.append(("tool_call_id", .string(s)))
                }
                if let name = v["name"]?.stringValue { out.append(("name", .string(name))) }
            }
            return .object(out)
        }
    }

    static func string(_ j: JSONValue, _ k: String) throws -> String? {
        guard let v = j[k], v != .null else { return nil }
        guard let s = v.stringValue else { throw APIError.invalid("'\(k)' must be a string", param: k) }
        return s
    }

    static func int(_ j: JSONValue, _ k: String) throws -> Int? {
        guard let v = j[k], v != .null else { return nil }
        guard let i = v.intValue, abs(i) <= Int64(Int32.max) else { throw APIError.invalid("'\(k)' must be an integer", param: k) }
        return Int(i)
    }

    static func number(_ j: JSONValue, _ k: String, prefix: String = "") throws -> Double? {
        guard let v = j[k], v != .null else { return nil }
        guard let d = v.doubleValue, d.isFinite else { throw APIError.invalid("'\(prefix)\(k)' must be a number", param: prefix + k) }
        return d
    }

    static func bool(_ j: JSONValue, _ k: String, prefix: String = "") throws -> Bool? {
        guard let v = j[k], v != .null else { return nil }
        guard let b = v.boolValue else { throw APIError.invalid("'\(prefix)\(k)' must be true or false", param: prefix + k) }
        return b
    }
}

/// A `/v1/embeddings` or `/v1/classify` body: the model (base or adapter) and one text or a list.
public struct TextsRequest: Sendable {
    public var model: String
    public var texts: [String]
    static let maxTexts = 2048

    public static func parse(_ body: [UInt8], field: String) throws -> TextsRequest {
        let j = try GenerationRequest.parseObject(body)
        let model = try GenerationRequest.string(j, "model") ?? { throw APIError.invalid("'model' is required", param: "model") }()
        if let f = try GenerationRequest.string(j, "encoding_format"), f != "float" {
            throw APIError.invalid("'encoding_format' '\(f)' is not supported (float)", param: "encoding_format")
        }
        let texts: [String]
        switch j[field] {
        case let .string(s)?: texts = [s]
        case let .array(a)? where !a.isEmpty && a.count <= maxTexts && a.allSatisfy({ $0.stringValue != nil }): texts = a.map { $0.stringValue! }
        case nil: throw APIError.invalid("'\(field)' is required", param: field)
        default: throw APIError.invalid("'\(field)' must be a string or a list of 1–\(maxTexts) strings", param: field)
        }
        return TextsRequest(model: model, texts: texts)
    }
}

/// A `POST /v1/adapters` body: the name to serve an adapter folder under, and the folder.
public struct AdapterLoadRequest: Sendable {
    public let name: String
    public let path: String

    public static func parse(_ body: [UInt8]) throws -> AdapterLoadRequest {
        let j = try GenerationRequest.parseObject(body)
        guard let name = try GenerationRequest.string(j, "name") else { throw APIError.invalid("'name' is required", param: "name") }
        guard let path = try GenerationRequest.string(j, "path"), !path.isEmpty else { throw APIError.invalid("'path' is required (an adapter folder)", param: "path") }
        return AdapterLoadRequest(name: name, path: path)
    }
}
