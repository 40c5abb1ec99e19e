import Foundation
import GraftFormats

/// A chat message.
public struct ChatMessage: Sendable, Equatable {
    public let role: String
    public let content: String
    public init(role: String, content: String) { self.role = role; self.content = content }

    var json: JSONValue { .object([("role", .string(role)), ("content", .string(content))]) }
}

/// A model's chat template: its Jinja source (from `tokenizer_config.json` or GGUF metadata) rendered as
/// transformers' `apply_chat_template` renders it, with the tokenizer's special tokens (`bos_token`,
/// `eos_token`, …) as variables. Equal to transformers on the templates of SmolLM2, Llama 3, Qwen2.5,
/// Mistral and Gemma (`ChatTemplateReferenceTests`).
public struct ChatTemplate: Sendable {
    public let source: String
    /// The template's special-token variables: `bos_token`, `eos_token`, `unk_token`, `pad_token`….
    public let specialTokens: [String: String]
    let template: JinjaTemplate

    /// Templates built in, for models without one (`--chat-template NAME`).
    public static let builtins: [String: String] = [
        "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    ]

    /// Parses `template`; a template Graft cannot read is refused here, with the line and what is wrong.
    public init(template: String, specialTokens: [String: String] = [:], limits: JinjaLimits = JinjaLimits()) throws {
        do { self.template = try JinjaTemplate(template, limits: limits) } catch let e as JinjaError {
            throw TokenizerError("chat template", "\(e) (Graft reads the Jinja that HF chat templates use; pass --chat-template NAME or FILE to use another template)")
        }
        source = template
        self.specialTokens = specialTokens
    }

    /// A built-in template by name, or a Jinja file.
    public init(named nameOrPath: String, specialTokens: [String: String] = [:]) throws {
        if let s = Self.builtins[nameOrPath] { try self.init(template: s, specialTokens: specialTokens); return }
        guard let d = FileManager.default.contents(atPath: nameOrPath) else {
            throw TokenizerError(nameOrPath, "not a built-in chat template (\(Self.builtins.keys.sorted().joined(separator: ", "))) nor a readable Jinja file")
        }
        do { try self.init(template: String(decoding: d, as: UTF8.self), specialTokens: specialTokens) } catch let e as TokenizerError {
            throw TokenizerError(nameOrPath, e.message)
        }
    }

    /// The prompt text for `messages` (each an OpenAI-style message object: role, content — a string or a list
    /// of parts — and tool calls), ending with the assistant's turn opened when `addGenerationPrompt`.
    /// `tools` and `variables` are passed to the template as `apply_chat_template`'s `tools` and keyword
    /// arguments are. A conversation the template refuses (its `raise_exception`) throws that message.
    public func render(messages: [JSONValue], addGenerationPrompt: Bool, tools: JSONValue? = nil,
                       variables: [String: JSONValue] = [:]) throws -> String {
        var context: [String: JinjaValue] = [:]
        for (k, v) in specialTokens { context[k] = .string(v) }
        for (k, v) in variables { context[k] = JinjaValue(v) }
        context["messages"] = .array(messages.map(JinjaValue.init))
        context["add_generation_prompt"] = .bool(addGenerationPrompt)
        if let tools { context["tools"] = JinjaValue(tools) }
        return try template.render(context)
    }

    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws -> String {
        try render(messages: messages.map(\.json), addGenerationPrompt: addGenerationPrompt)
    }

    /// The conversation as consecutive pieces of text, each marked when it is the assistant's own output
    /// (its content and end-of-turn marker) — what supervised fine-tuning puts the loss on. Found by
    /// rendering the conversation up to each assistant message with and without it, as TRL does for
    /// templates without `{% generation %}` markers; whitespace after the end of turn is not the
    /// assistant's. Concatenated, the pieces equal `render(messages, addGenerationPrompt: false)`.
    public func segments(_ messages: [ChatMessage]) throws -> [(text: String, assistant: Bool)] {
        var out: [(String, Bool)] = []
        var emitted = ""
        func rest(_ whole: String, after prefix: String) throws -> String {
            guard whole.hasPrefix(prefix) else {
                throw TokenizerError("chat template", "rendering a longer conversation changes the text of the earlier turns, so the assistant's part cannot be found")
            }
            return String(whole.dropFirst(prefix.count))
        }
        for (i, m) in messages.enumerated() where m.role == "assistant" {
            let before = try render(Array(messages[..<i]), addGenerationPrompt: true)
            let through = try render(Array(messages[...i]), addGenerationPrompt: false)
            let lead = try rest(before, after: emitted)
            if !lead.isEmpty { out.append((lead, false)) }
            let own = try rest(through, after: before)
            let body = own.trimmingTrailingWhitespace
            if !body.isEmpty { out.append((body, true)) }
            if body.count < own.count { out.append((String(own.dropFirst(body.count)), false)) }
            emitted = through
        }
        let tail = try rest(try render(messages, addGenerationPrompt: false), after: emitted)
        if !tail.isEmpty { out.append((tail, false)) }
        return out
    }
}

/// The special-token variables a template sees, as transformers' `special_tokens_map` gives them, from
/// `tokenizer_config.json`: each a string or an added-token object with `content`.
public func chatTemplateSpecialTokens(tokenizerConfig j: JSONValue) -> [String: String] {
    var out: [String: String] = [:]
    for k in ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"] {
        if let s = j[k]?.stringValue ?? j[k]?["content"]?.stringValue { out[k] = s }
    }
    return out
}

private extension String {
    var trimmingTrailingWhitespace: String {
        var s = Substring(self)
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
