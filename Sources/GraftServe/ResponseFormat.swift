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

    func chunk(delta: JSONValue, logprobs: JSONValue = .null, finish: String? = nil) -> JSONValue {
        envelope(object: chunkObject, choices: [.object([("index", .int(0)), ("delta", delta), ("logprobs", logprobs),
                                                         ("finish_reason", finish.map { .string($0) } ?? .null)])])
    }

    /// A piece of streamed text with the log-probabilities of the tokens behind it.
    func piece(_ text: String, tokens: [TokenInfo]) -> JSONValue {
        if chat { return chunk(delta: .object([("content", .string(text))]), logprobs: logprobs(tokens)) }
        return envelope(object: chunkObject, choices: [.object([("text", .string(text)), ("index", .int(0)), ("logprobs", logprobs(tokens)),
                                                                ("finish_reason", .null)])])
    }

    func final(reason: String) -> JSONValue {
        if chat { return chunk(delta: .object([]), finish: reason) }
        return envelope(object: chunkObject, choices: [.object([("text", .string("")), ("index", .int(0)), ("logprobs", .null),
                                                                ("finish_reason", .string(reason))])])
    }

    func usage(prompt: Int, completion: Int) -> JSONValue {
        .object([("prompt_tokens", .int(Int64(prompt))), ("completion_tokens", .int(Int64(completion))), ("total_tokens", .int(Int64(prompt + completion)))])
    }

    /// The last chunk of a stream with `stream_options.include_usage`: no choices, the usage.
    func usageChunk(prompt: Int, completion: Int) -> JSONValue {
        envelope(object: chunkObject, choices: [], usage: usage(prompt: prompt, completion: completion))
    }

    func complete(text: String, tokens: [TokenInfo], finish: String, promptTokens: Int, completionTokens: Int) -> JSONValue {
        let choice: JSONValue = chat
            ? .object([("index", .int(0)), ("message", .object([("role", .string("assistant")), ("content", .string(text))])),
                       ("logprobs", logprobs(tokens)), ("finish_reason", .string(finish))])
            : .object([("text", .string(text)), ("index", .int(0)), ("logprobs", logprobs(tokens)), ("finish_reason", .string(finish))])
        return envelope(object: object, choices: [choice], usage: usage(prompt: promptTokens, completion: completionTokens))
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
