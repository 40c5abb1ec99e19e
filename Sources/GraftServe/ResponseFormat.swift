import GraftAPI
import Foundation
import GraftFormats
import GraftText

/// The JSON of OpenAI's completion and chat-completion responses, whole or as server-sent-event chunks.
struct ResponseFormat {
    let id: String
    let model: String
    let created: Int64
    let chat: Bool
    let request: GenerationRequest
    let tokenizer: ByteLevelBPETokenizer

    var object: String { chat ? "chat.completion" : "text_completion" }

    func sse(_ v: JSONValue) -> String { "data: " + v.serialized() + "\n\n" }

    private func envelope(object: String, choices: [JSONValue], usage: JSONValue? = nil) -> JSONValue {
        var o: [(String, JSONValue)] = [("id", .string(id)), ("object", .string(object)), ("created", .int(created)), ("model", .string(model)),
                                        ("choices", .array(choices))]
        if let usage { o.append(("usage", usage)) }
        return .object(o)
    }

    private var chunkObject: String { chat ? "chat.completion.chunk" : "text_completion" }

    func chunk(index: Int, delta: JSONValue, logprobs: JSONValue = .null, finish: String? = nil) -> JSONValue {
        envelope(object: chunkObject, choices: [.object([("index", .int(Int64(index))), ("delta", delta), ("logprobs", logprobs),
                                                         ("finish_reason", finish.map { .string($0) } ?? .null)])])
    }

    /// A piece of choice `index`'s streamed text with the log-probabilities of the tokens behind it.
    func piece(index: Int, _ text: String, tokens: [TokenInfo]) -> JSONValue {
        if chat { return chunk(index: index, delta: .object([("content", .string(text))]), logprobs: logprobs(tokens)) }
        return envelope(object: chunkObject, choices: [.object([("text", .string(text)), ("index", .int(Int64(index))), ("logprobs", logprobs(tokens)),
                                                                ("finish_reason", .null)])])
    }

    func final(index: Int, reason: String) -> JSONValue {
        if chat { return chunk(index: index, delta: .object([]), finish: reason) }
        return envelope(object: chunkObject, choices: [.object([("text", .string("")), ("index", .int(Int64(index))), ("logprobs", .null),
                                                                ("finish_reason", .string(reason))])])
    }

    func usage(prompt: Int, completion: Int) -> JSONValue {
        .object([("prompt_tokens", .int(Int64(prompt))), ("completion_tokens", .int(Int64(completion))), ("total_tokens", .int(Int64(prompt + completion)))])
    }

    /// The last chunk of a stream with `stream_options.include_usage`: no choices, the usage.
    func usageChunk(prompt: Int, completion: Int) -> JSONValue {
        envelope(object: chunkObject, choices: [], usage: usage(prompt: prompt, completion: completion))
    }

    /// One choice of a whole response.
    struct Choice {
        var text = "", tokens: [TokenInfo] = [], finish: String?
        var toolCalls: [ToolCall] = []
    }

    /// A streamed choice's tool calls, whole (the `openai` client accumulates `delta.tool_calls` by index).
    func toolCallsChunk(index: Int, _ calls: [ToolCall]) -> JSONValue {
        chunk(index: index, delta: .object([("tool_calls", .array(calls.enumerated().map { k, c in
            .object([("index", .int(Int64(k)))] + (c.json.objectValue ?? []))
        }))]))
    }

    /// The whole response: every choice by its index; the prompt counted once, the completions summed.
    func complete(_ choices: [Choice], promptTokens: Int, completionTokens: Int) -> JSONValue {
        let list: [JSONValue] = choices.enumerated().map { i, c in
            let finish: JSONValue = c.finish.map { .string($0) } ?? .null
            return chat
                ? .object([("index", .int(Int64(i))), ("message", message(c)), ("logprobs", logprobs(c.tokens)), ("finish_reason", finish)])
                : .object([("text", .string(c.text)), ("index", .int(Int64(i))), ("logprobs", logprobs(c.tokens)), ("finish_reason", finish)])
        }
        return envelope(object: object, choices: list, usage: usage(prompt: promptTokens, completion: completionTokens))
    }

    /// A chat choice's message: its text (null when it only calls tools) and its tool calls.
    func message(_ c: Choice) -> JSONValue {
        var m: [(String, JSONValue)] = [("role", .string("assistant")), ("content", c.text.isEmpty && !c.toolCalls.isEmpty ? .null : .string(c.text))]
        if !c.toolCalls.isEmpty { m.append(("tool_calls", .array(c.toolCalls.map(\.json)))) }
        return .object(m)
    }

    /// Log-probabilities as each endpoint gives them: chat's `content` list of tokens with `top_logprobs`,
    /// completions' parallel `tokens` / `token_logprobs` / `top_logprobs` lists. Null unless asked for.
    func logprobs(_ tokens: [TokenInfo]) -> JSONValue {
        guard request.logprobs != nil else { return .null }
        func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }
        func bytes(_ b: [UInt8]) -> JSONValue { .array(b.map { .int(Int64($0)) }) }
        if chat {
            return .object([("content", .array(tokens.map { t in
                .object([("token", .string(text(t.bytes))), ("logprob", .double(Double(t.logprob))), ("bytes", bytes(t.bytes)),
                         ("top_logprobs", .array(t.top.map { .object([("token", .string(text($0.bytes))), ("logprob", .double(Double($0.logprob))), ("bytes", bytes($0.bytes))]) }))])
            }))])
        }
        return .object([("tokens", .array(tokens.map { .string(text($0.bytes)) })),
                        ("token_logprobs", .array(tokens.map { .double(Double($0.logprob)) })),
                        ("top_logprobs", .array(tokens.map { t in .object(t.top.map { (text($0.bytes), .double(Double($0.logprob))) }) }))])
    }
}
