import Foundation

/// A chat message.
public struct ChatMessage: Sendable, Equatable {
    public let role: String
    public let content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// Chat prompt formats. Graft recognises templates by their markers rather than running Jinja:
/// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`, SmolLM2, Qwen) with the default system prompt
/// the template inserts when the conversation has none.
public struct ChatTemplate: Sendable {
    public enum Kind: String, Sendable, CaseIterable { case chatml }
    public let kind: Kind
    /// The system prompt a template adds when the first message is not a system message.
    public let defaultSystem: String?

    public static var supported: [String] { Kind.allCases.map(\.rawValue) }

    /// Recognises a Jinja chat template (as stored in tokenizer_config.json or GGUF metadata).
    public init(template: String) throws {
        guard template.contains("<|im_start|>") else {
            throw TokenizerError("chat template", "this model's chat template is not one Graft knows (supported: \(Self.supported.joined(separator: ", "))); pass --chat-template chatml to choose one")
        }
        kind = .chatml
        // SmolLM2: {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are …<|im_end|>\n' }}
        // (the newline may be a real one or Jinja's escaped "\n")
        defaultSystem = ["<|im_start|>system\n", "<|im_start|>system\\n"].lazy.compactMap { marker -> String? in
            guard let r = template.range(of: marker),
                  let e = template.range(of: "<|im_end|>", range: r.upperBound..<template.endIndex),
                  template[template.startIndex..<r.lowerBound].contains("!= 'system'") else { return nil }
            return String(template[r.upperBound..<e.lowerBound])
        }.first
    }

    public init(kind: Kind, defaultSystem: String? = nil) { self.kind = kind; self.defaultSystem = defaultSystem }

    /// The prompt text for `messages`, ending with the assistant's turn opened when `addGenerationPrompt`.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var s = ""
        var msgs = messages
        if let sys = defaultSystem, msgs.first?.role != "system" { msgs.insert(ChatMessage(role: "system", content: sys), at: 0) }
        for m in msgs { s += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
        if addGenerationPrompt { s += "<|im_start|>assistant\n" }
        return s
    }

    /// The conversation as consecutive pieces of text, each marked when it is the assistant's own
    /// output (its content and end-of-turn marker) — what supervised fine-tuning puts the loss on.
    /// Concatenated, the pieces equal `render(messages, addGenerationPrompt: false)`.
    public func segments(_ messages: [ChatMessage]) -> [(text: String, assistant: Bool)] {
        var msgs = messages
        if let sys = defaultSystem, msgs.first?.role != "system" { msgs.insert(ChatMessage(role: "system", content: sys), at: 0) }
        var out: [(String, Bool)] = []
        for m in msgs {
            if m.role == "assistant" {
                out.append(("<|im_start|>assistant\n", false))
                out.append((m.content + "<|im_end|>", true))
                out.append(("\n", false))
            } else {
                out.append(("<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n", false))
            }
        }
        return out
    }
}
