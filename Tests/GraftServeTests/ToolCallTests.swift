import Foundation
import GraftAPI
import GraftFormats
@testable import GraftServe
import GraftTestSupport
import GraftText
import XCTest

/// Tools in chat requests: the OpenAI request rendered by the model's template as transformers renders it,
/// and the reply's tool calls read in each model family's format (as llama.cpp's server picks its parser).
final class ToolCallTests: XCTestCase {
    let names: Set<String> = ["get_weather", "add"]

    func template(_ name: String) throws -> ChatTemplate {
        let source = try String(contentsOfFile: referenceRoot + "/chat-templates/templates/\(name).jinja", encoding: .utf8)
        let special = try fixtureJSON("chat-templates/rendered.json")["templates"]?[name]?["special_tokens"]
        var tokens: [String: String] = [:]
        if case .object(let pairs)? = special { for (k, v) in pairs { tokens[k] = v.stringValue } }
        return try ChatTemplate(template: source, specialTokens: tokens)
    }

    func testEachTemplateGetsItsFamilysFormat() throws {
        XCTAssertEqual(ToolCallFormat.of(template: try template("qwen2.5").source), .hermes)
        XCTAssertEqual(ToolCallFormat.of(template: try template("mistral-nemo").source), .mistral)
        XCTAssertEqual(ToolCallFormat.of(template: try template("llama-3.1").source), .llama3)
        for name in ["smollm2", "gemma-2", "gemma-3", "mistral-7b-v0.2"] {
            XCTAssertNil(ToolCallFormat.of(template: try template(name).source), "\(name) does not render tools")
        }
    }

    func testRepliesParseInEachFormat() {
        let hermes = ToolCallFormat.hermes.parse("Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": [2, \"}\"]}}\n</tool_call>", names: names)
        XCTAssertEqual(hermes.content, "Let me check.")
        XCTAssertEqual(hermes.calls.map(\.name), ["get_weather", "add"])
        XCTAssertEqual(hermes.calls.map(\.arguments), [#"{"city":"Zürich"}"#, #"{"a":1,"b":[2,"}"]}"#])
        XCTAssertTrue(hermes.calls.allSatisfy { $0.id.hasPrefix("call_") && $0.id.count == 29 })

        let mistral = ToolCallFormat.mistral.parse(#"[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}, "id": "abc123XYZ"}, {"name": "get_weather", "arguments": {}}]"#, names: names)
        XCTAssertEqual(mistral.content, "")
        XCTAssertEqual(mistral.calls.map(\.name), ["add", "get_weather"])
        XCTAssertEqual(mistral.calls[0].id, "abc123XYZ", "the model's own id is kept")
        XCTAssertEqual(mistral.calls[1].id.count, 9, "Mistral's templates refuse ids that are not 9 characters")

        for reply in [#"<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}"#, #"{"name": "get_weather", "parameters": {"city": "Oslo"}}"#] {
            let llama = ToolCallFormat.llama3.parse(reply, names: names)
            XCTAssertEqual(llama.calls.map(\.arguments), [#"{"city":"Oslo"}"#], reply)
            XCTAssertEqual(llama.content, "")
        }

        // A small model's unclosed call is read when its name and arguments are whole.
        let unclosed = ToolCallFormat.hermes.parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \n{\"city\": \"Paris\"}\n</tool_call>", names: names)
        XCTAssertEqual(unclosed.calls.map(\.arguments), [#"{"city":"Paris"}"#])

        // Not calls: an undeclared name, arguments that are not an object, broken JSON, plain JSON text.
        for (format, reply) in [(ToolCallFormat.hermes, "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>"),
                                (.hermes, "<tool_call>\n{\"name\": \"add\", \"arguments\": 3}\n</tool_call>"),
                                (.mistral, #"[TOOL_CALLS][{"name": "add", "arguments": {"a": 1"#),
                                (.llama3, #"{"answer": 42}"#)] {
            let r = format.parse(reply, names: names)
            XCTAssertEqual(r.calls, [], reply)
            XCTAssertEqual(r.content, reply, "a reply without a readable call is passed on whole")
        }
    }

    func testStreamingHoldsBackACallUntilTheReplyEnds() {
        var s = ToolCallStreamer(format: .hermes, names: names)
        XCTAssertEqual(s.append("It is "), "It is ")
        XCTAssertEqual(s.append("sunny <tool"), "sunny ", "the start of a marker is held back")
        XCTAssertEqual(s.append("ing> no"), "<tooling> no", "and sent when it turns out not to be one")
        XCTAssertEqual(s.append(" <tool_call>\n{\"name\": \"add\", "), " ")
        XCTAssertEqual(s.append("\"arguments\": {\"a\": 2}}\n</tool_call>"), "")
        let (rest, calls) = s.finish()
        XCTAssertEqual(rest, "")
        XCTAssertEqual(calls.map(\.arguments), [#"{"a":2}"#])
        // Forced: the reply starts inside a call.
        var forced = ToolCallStreamer(format: .hermes, names: names, forced: ToolCallFormat.hermes.forcedStart(name: "add"))
        XCTAssertEqual(forced.append(#"{"a": 1}}"#), "")
        XCTAssertEqual(forced.finish().calls.map(\.name), ["add"])
    }

    /// An OpenAI request (arguments as a JSON string, tool results, `tools`) renders through Qwen2.5's own
    /// template exactly as transformers rendered the same conversation (the fixture's case).
    func testOpenAIRequestRendersAsTransformers() throws {
        let qwen = try fixtureJSON("chat-templates/rendered.json")["templates"]?["qwen2.5"]?["cases"]?.arrayValue ?? []
        let want = try XCTUnwrap(qwen.first { $0["name"]?.stringValue == "tool-call-and-result" })
        let tools = try XCTUnwrap(want["variables"]?["tools"])
        let body = #"""
        {"model": "m", "messages": [
          {"role": "user", "content": "Weather in Zürich?"},
          {"role": "assistant", "content": null, "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Zürich\", \"days\": 2}"}}]},
          {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": 3}"},
          {"role": "tool", "content": [{"type": "text", "text": "second"}]},
          {"role": "user", "content": "Thanks"}],
         "tools": \#(tools.serialized())}
        """#
        let r = try GenerationRequest.parse(Array(body.utf8), chat: true)
        guard case let .chat(messages) = r.prompt else { return XCTFail("not a chat") }
        let (prompt, tooling) = try GraftServer.chatPrompt(messages, request: r, template: try template("qwen2.5"))
        XCTAssertEqual(prompt, want["rendered"]?.stringValue)
        XCTAssertEqual(tooling?.format, .hermes)
        XCTAssertNil(tooling?.forced)
    }

    /// A template that does not render tools (SmolLM2's): the tools described in the system message, earlier
    /// calls and results written in the same form; `tool_choice` naming a function opens its call.
    func testToolsDescribedForATemplateWithoutThem() throws {
        let body = #"""
        {"model": "m", "messages": [{"role": "user", "content": "Add 1 and 2"},
          {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1, \"b\": 2}"}}]},
          {"role": "tool", "tool_call_id": "c1", "content": "3"}],
         "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
         "tool_choice": {"type": "function", "function": {"name": "add"}}}
        """#
        let r = try GenerationRequest.parse(Array(body.utf8), chat: true)
        guard case let .chat(messages) = r.prompt else { return XCTFail("not a chat") }
        let (prompt, tooling) = try GraftServer.chatPrompt(messages, request: r, template: try template("smollm2"))
        let tool = #"{"type":"function","function":{"name":"add","parameters":{"type":"object"}}}"#
        XCTAssertEqual(prompt, "<|im_start|>system\n" + ToolCallFormat.describe(r.tools) + "<|im_end|>\n"
                       + "<|im_start|>user\nAdd 1 and 2<|im_end|>\n"
                       + "<|im_start|>assistant\n<tool_call>\n{\"name\":\"add\",\"arguments\":{\"a\":1,\"b\":2}}\n</tool_call><|im_end|>\n"
                       + "<|im_start|>user\n<tool_response>\n3\n</tool_response><|im_end|>\n"
                       + "<|im_start|>assistant\n<tool_call>\n{\"name\": \"add\", \"arguments\": ")
        XCTAssertTrue(ToolCallFormat.describe(r.tools).contains("<tools>\n" + tool + "\n</tools>"))
        XCTAssertEqual(tooling?.format, .hermes)
        // Gemma 2 refuses a system turn: the tools go into the first user message instead.
        let (gemma, _) = try GraftServer.chatPrompt(messages, request: r, template: try template("gemma-2"))
        XCTAssertTrue(gemma.hasPrefix("<bos><start_of_turn>user\n# Tools\n"), gemma)
    }

    func testBadToolFieldsAreRefusedByName() {
        let base = #"{"model": "m", "messages": [{"role": "user", "content": "x"}]"#
        for (extra, param) in [(#", "tools": [{"type": "function", "function": {"name": "has space"}}]"#, "tools"),
                               (#", "tools": [{"type": "retrieval"}]"#, "tools"),
                               (#", "tools": [{"type": "function", "function": {"name": "a"}}], "tool_choice": {"type": "function", "function": {"name": "b"}}"#, "tool_choice"),
                               (#", "tool_choice": "required""#, "tool_choice"),
                               (#", "tools": [{"type": "function", "function": {"name": "a"}}], "tool_choice": "sometimes""#, "tool_choice"),
                               (#", "tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]"#, "tools")] {
            XCTAssertThrowsError(try GenerationRequest.parse(Array((base + extra + "}").utf8), chat: true), extra) {
                XCTAssertEqual(($0 as? APIError)?.param, param, extra)
            }
        }
        let badArguments = #"{"model": "m", "messages": [{"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "a", "arguments": "{oops"}}]}]}"#
        XCTAssertThrowsError(try GenerationRequest.parse(Array(badArguments.utf8), chat: true)) {
            XCTAssertEqual(($0 as? APIError)?.message.contains("arguments is not JSON"), true, "\($0)")
        }
        XCTAssertThrowsError(try GenerationRequest.parse(Array(#"{"model": "m", "prompt": "x", "tools": []}"#.utf8), chat: false))
    }
}
