import Foundation
import GraftFormats

/// A function call the model asked for, as OpenAI's `tool_calls` give it (`arguments` a JSON string).
public struct ToolCall: Sendable, Equatable {
    public let id: String
    public let name: String
    public let arguments: String
    public init(id: String, name: String, arguments: String) { self.id = id; self.name = name; self.arguments = arguments }

    public var json: JSONValue {
        .object([("id", .string(id)), ("type", .string("function")),
                 ("function", .object([("name", .string(name)), ("arguments", .string(arguments))]))])
    }

    /// A new id: OpenAI's form (`call_` and 24 letters and digits), or 9 letters and digits for Mistral,
    /// whose templates refuse any other id when the call comes back in the conversation.
    public static func newID(_ format: ToolCallFormat) -> String {
        let chars = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        if format == .mistral { return String((0..<9).map { _ in chars.randomElement()! }) }
        return "call_" + String((0..<24).map { _ in chars.randomElement()! })
    }
}

/// How a model writes tool calls in its output, known from its chat template (as llama.cpp's server picks
/// its parser from the template):
/// - `hermes`: `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, once per call (Qwen2.5,
///   Hermes, SmolLM3). Also what Graft asks of a model whose template does not render tools: the tools
///   and this format are described in its system message (`ToolCallFormat.describe`).
/// - `mistral`: `[TOOL_CALLS]` then a JSON list of `{"name", "arguments"}` (Mistral Nemo, Mistral 7B v0.3+).
/// - `llama3`: the whole reply a JSON object `{"name": …, "parameters": {…}}`, after `<|python_tag|>` or
///   not (Llama 3.1–3.3's JSON tool calling).
public enum ToolCallFormat: String, Sendable {
    case hermes, mistral, llama3

    /// The format a template's model writes; nil when the template does not render tools (Graft then
    /// describes them itself and asks for `hermes`).
    public static func of(template source: String) -> ToolCallFormat? {
        if source.contains("[TOOL_CALLS]") { return .mistral }
        if source.contains("<tool_call>") { return .hermes }
        if source.contains("<|python_tag|>") || source.contains("ipython") { return .llama3 }
        return source.contains("tools") ? .hermes : nil
    }

    /// Where a call begins in the output.
    var markers: [String] {
        switch self {
        case .hermes: return ["<tool_call>"]
        case .mistral: return ["[TOOL_CALLS]"]
        case .llama3: return ["<|python_tag|>", "{\"name\""]
        }
    }

    /// The start of the reply that makes it a call (`tool_choice` `required`), or a call of `name`.
    public func forcedStart(name: String?) -> String {
        let named = name.map { "\"name\": \(JSONValue.quote($0)), \"" + (self == .llama3 ? "parameters" : "arguments") + "\": " } ?? "\"name\": \""
        switch self {
        case .hermes: return "<tool_call>\n{" + named
        case .mistral: return "[TOOL_CALLS][{" + named
        case .llama3: return "{" + named
        }
    }

    /// The system-message text that describes `tools` (OpenAI tool objects) and asks for `hermes` calls,
    /// for templates that do not render tools (the wording of Qwen2.5's template).
    public static func describe(_ tools: [JSONValue]) -> String {
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            + "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            + tools.map { $0.serialized() }.joined(separator: "\n")
            + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
            + "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"
    }

    /// The conversation made ready for a template that does not render tools, in `hermes` form: the tools
    /// described in the system message (one added when there is none; in the first user message with
    /// `inUserMessage`, for templates that refuse a system turn), earlier calls written into their
    /// assistant messages, tool results sent back as user messages in `<tool_response>` tags (Qwen2.5's form).
    public static func describing(_ tools: [JSONValue], in messages: [JSONValue], inUserMessage: Bool = false) -> [JSONValue] {
        func with(_ m: JSONValue, content: String, role: String? = nil) -> JSONValue {
            .object((m.objectValue ?? []).filter { $0.0 != "tool_calls" && $0.0 != "tool_call_id" && $0.0 != "name" }.map { k, v in
                k == "content" ? (k, .string(content)) : k == "role" ? (k, .string(role ?? v.stringValue ?? "")) : (k, v)
            })
        }
        var out: [JSONValue] = messages.map { m in
            let content = m["content"]?.stringValue ?? ""
            switch m["role"]?.stringValue {
            case "assistant"?:
                let calls = (m["tool_calls"]?.arrayValue ?? []).map { c -> String in
                    let f = c["function"] ?? .null
                    return "<tool_call>\n" + JSONValue.object([("name", f["name"] ?? .null), ("arguments", f["arguments"] ?? .object([]))]).serialized() + "\n</tool_call>"
                }
                return with(m, content: ([content].filter { !$0.isEmpty } + calls).joined(separator: "\n"))
            case "tool"?: return with(m, content: "<tool_response>\n" + content + "\n</tool_response>", role: "user")
            default: return m
            }
        }
        let text = describe(tools)
        if out.first?["role"]?.stringValue == "system" {
            out[0] = with(out[0], content: (out[0]["content"]?.stringValue ?? "") + "\n\n" + text)
        } else if inUserMessage, let i = out.firstIndex(where: { $0["role"]?.stringValue == "user" }) {
            out[i] = with(out[i], content: text + "\n\n" + (out[i]["content"]?.stringValue ?? ""))
        } else {
            out.insert(.object([("role", .string("system")), ("content", .string(text))]), at: 0)
        }
        return out
    }

    /// Splits a whole reply into its text and its calls. A call names one of `names` and has JSON-object
    /// arguments; anything that does not parse as one stays text.
    public func parse(_ text: String, names: Set<String>) -> (content: String, calls: [ToolCall]) {
        guard let start = markers.compactMap({ text.range(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) else { return (text, []) }
        let before = String(text[..<start.lowerBound])
        let rest = String(text[start.lowerBound...])
        var calls: [ToolCall] = []
        var after = ""
        switch self {
        case .hermes:
            var s = Substring(rest)
            while let open = s.range(of: "<tool_call>") {
                after += s[..<open.lowerBound]
                let body = s[open.upperBound...]
                let close = body.range(of: "</tool_call>")
                let inner = body[..<(close?.lowerBound ?? body.endIndex)]
                guard let call = call(from: String(inner), argumentsKey: "arguments", names: names) ?? lenientCall(inner, names: names) else { return (text, []) }
                calls.append(call)
                s = close.map { body[$0.upperBound...] } ?? ""
            }
            after += s
        case .mistral:
            var body = Substring(rest.dropFirst("[TOOL_CALLS]".count))
            guard let (list, end) = Self.json(prefixOf: body), let items = list.arrayValue else {
                guard let call = lenientCall(body, names: names) else { return (text, []) }
                return (before.trimmingCharacters(in: .whitespacesAndNewlines), [call])
            }
            for item in items {
                guard let call = call(item, argumentsKey: "arguments", names: names) else { return (text, []) }
                calls.append(call)
            }
            body = body[end...]
            after = String(body)
        case .llama3:
            var body = Substring(rest.hasPrefix("<|python_tag|>") ? String(rest.dropFirst("<|python_tag|>".count)) : rest)
            while let (object, end) = Self.json(prefixOf: body) {
                guard let call = call(object, argumentsKey: object["parameters"] != nil ? "parameters" : "arguments", names: names) else { return (text, []) }
                calls.append(call)
                body = body[end...].drop { $0 == ";" || $0.isWhitespace }
            }
            if calls.isEmpty, let call = lenientCall(body, names: names) { return (before.trimmingCharacters(in: .whitespacesAndNewlines), [call]) }
            guard !calls.isEmpty else { return (text, []) }
            after = String(body)
        }
        let content = (before + after).trimmingCharacters(in: .whitespacesAndNewlines)
        return (content, calls)
    }

    /// A call from its JSON text.
    func call(from text: String, argumentsKey: String, names: Set<String>) -> ToolCall? {
        guard let (v, end) = Self.json(prefixOf: Substring(text)), text[end...].allSatisfy(\.isWhitespace) else { return nil }
        return call(v, argumentsKey: argumentsKey, names: names)
    }

    func call(_ v: JSONValue, argumentsKey: String, names: Set<String>) -> ToolCall? {
        guard let name = v["name"]?.stringValue, names.contains(name) else { return nil }
        let args = v[argumentsKey] ?? .object([])
        guard case .object = args else { return nil }
        return ToolCall(id: v["id"]?.stringValue ?? ToolCall.newID(self), name: name, arguments: args.serialized())
    }

    /// A call whose object does not close (a small model's slip, e.g. `{"name": "f", "arguments": {…}` then
    /// the end tag): its name string, then its arguments object, each whole; the rest is ignored.
    func lenientCall(_ s: Substring, names: Set<String>) -> ToolCall? {
        func value(after key: String, in s: Substring) -> (JSONValue, String.Index)? {
            guard let k = s.range(of: "\"" + key + "\"") else { return nil }
            let rest = s[k.upperBound...].drop(while: \.isWhitespace)
            guard rest.first == ":" else { return nil }
            return Self.json(prefixOf: rest.dropFirst())
        }
        guard let (name, end) = value(after: "name", in: s), let n = name.stringValue, names.contains(n) else { return nil }
        let tail = s[end...]
        guard let (args, _) = value(after: self == .llama3 ? "parameters" : "arguments", in: tail) ?? value(after: "arguments", in: tail),
              case .object = args else { return nil }
        return ToolCall(id: ToolCall.newID(self), name: n, arguments: args.serialized())
    }

    /// The JSON value at the start of `s` (after whitespace) and where it ends, found by matching brackets
    /// outside strings; nil when it is not one whole value.
    static func json(prefixOf s: Substring) -> (JSONValue, String.Index)? {
        guard let first = s.firstIndex(where: { !$0.isWhitespace }) else { return nil }
        if s[first] == "\"" {  // a string: to its closing quote
            var escaped = false
            var i = s.index(after: first)
            while i < s.endIndex {
                if escaped { escaped = false } else if s[i] == "\\" { escaped = true } else if s[i] == "\"" {
                    let end = s.index(after: i)
                    return (try? JSONValue.parse(Array(s[first..<end].utf8))).map { ($0, end) }
                }
                i = s.index(after: i)
            }
            return nil
        }
        guard s[first] == "{" || s[first] == "[" else { return nil }
        var depth = 0, inString = false, escaped = false
        var i = first
        while i < s.endIndex {
            let c = s[i]
            if inString {
                if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
            } else if c == "\"" { inString = true }
            else if c == "{" || c == "[" { depth += 1 }
            else if c == "}" || c == "]" {
                depth -= 1
                if depth == 0 {
                    let end = s.index(after: i)
                    guard let v = try? JSONValue.parse(Array(s[first..<end].utf8)) else { return nil }
                    return (v, end)
                }
            }
            i = s.index(after: i)
        }
        return nil
    }
}

/// Streams a reply whose calls are parsed at its end: text is passed on as it comes until a call may be
/// starting (a marker, or the beginning of one held back), then held to be parsed when the reply ends.
public struct ToolCallStreamer: Sendable {
    public let format: ToolCallFormat
    let names: Set<String>
    private var held: String
    private var inCall: Bool

    /// `forced`: the reply begins with this text (`ToolCallFormat.forcedStart`), already in a call.
    public init(format: ToolCallFormat, names: Set<String>, forced: String? = nil) {
        self.format = format; self.names = names; held = forced ?? ""; inCall = forced != nil
    }

    /// A piece of the reply; returns the text that can be sent now.
    public mutating func append(_ piece: String) -> String {
        held += piece
        guard !inCall else { return "" }
        if let start = format.markers.compactMap({ held.range(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            let out = String(held[..<start.lowerBound])
            held = String(held[start.lowerBound...])
            inCall = true
            return out
        }
        // Hold back a tail that may begin a marker.
        var keep = 0
        for m in format.markers {
            for k in stride(from: min(m.count - 1, held.count), to: keep, by: -1) where held.hasSuffix(m.prefix(k)) { keep = k; break }
        }
        let out = String(held.dropLast(keep))
        held = String(held.suffix(keep))
        return out
    }

    /// At the end of the reply: the text still to send and the calls.
    public mutating func finish() -> (content: String, calls: [ToolCall]) {
        defer { held = "" }
        return format.parse(held, names: names)
    }
}
