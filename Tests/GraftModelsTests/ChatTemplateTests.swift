import Foundation
import GraftFormats
import GraftTestSupport
@testable import GraftText
import XCTest

/// Chat templates rendered as transformers' `apply_chat_template` renders them: the real templates of SmolLM2,
/// Qwen2.5, Llama 3.1, Mistral (7B v0.2, Nemo) and Gemma (2, 3) over conversations with system turns, tools,
/// tool calls and content parts, and one small template per Jinja feature; expected texts and refusals from
/// scripts/reference/make-chat-template-reference.py (transformers 5.25, jinja2 3.1.6).
final class ChatTemplateReferenceTests: XCTestCase {
    func reference() throws -> JSONValue { try fixtureJSON("chat-templates/rendered.json") }

    func template(_ name: String, _ special: JSONValue?) throws -> ChatTemplate {
        let source = try String(contentsOfFile: referenceRoot + "/chat-templates/templates/\(name).jinja", encoding: .utf8)
        var tokens: [String: String] = [:]
        if case .object(let pairs)? = special { for (k, v) in pairs { tokens[k] = v.stringValue } }
        return try ChatTemplate(template: source, specialTokens: tokens)
    }

    func testRealTemplatesRenderAsTransformers() throws {
        guard case .object(let templates)? = try reference()["templates"] else { return XCTFail("no templates in the fixture") }
        XCTAssertEqual(Set(templates.map(\.0)), ["smollm2", "qwen2.5", "llama-3.1", "mistral-7b-v0.2", "mistral-nemo", "gemma-2", "gemma-3"])
        var rendered = 0, refused = 0
        for (name, t) in templates {
            let tmpl = try template(name, t["special_tokens"])
            for c in t["cases"]?.arrayValue ?? [] {
                let label = "\(name)/\(c["name"]?.stringValue ?? "?")"
                var variables: [String: JSONValue] = [:]
                if case .object(let pairs)? = c["variables"] { for (k, v) in pairs where k != "tools" { variables[k] = v } }
                let run = {
                    try tmpl.render(messages: c["messages"]?.arrayValue ?? [], addGenerationPrompt: c["add_generation_prompt"] == .bool(true),
                                    tools: c["variables"]?["tools"], variables: variables)
                }
                if let want = c["rendered"]?.stringValue {
                    XCTAssertEqual(try run(), want, label)
                    rendered += 1
                } else {
                    XCTAssertThrowsError(try run(), label) {
                        XCTAssertEqual(($0 as? JinjaError)?.raised, true, label)
                        XCTAssertEqual(($0 as? JinjaError)?.message, c["error"]?.stringValue, label)
                    }
                    refused += 1
                }
            }
        }
        XCTAssertEqual(rendered, 58)
        XCTAssertEqual(refused, 15)
    }

    func testEachJinjaFeatureRendersAsJinja() throws {
        let ref = try reference()["snippets"]
        var context: [String: JSONValue] = ["bos_token": .string("<s>")]
        if case .object(let pairs)? = ref?["variables"] { for (k, v) in pairs { context[k] = v } }
        let cases = ref?["cases"]?.arrayValue ?? []
        XCTAssertGreaterThan(cases.count, 30)
        for c in cases {
            let source = c["template"]?.stringValue ?? ""
            let run = {
                try ChatTemplate(template: source).render(messages: [.object([("role", .string("user")), ("content", .string("-"))])],
                                                          addGenerationPrompt: false, variables: context)
            }
            if let want = c["rendered"]?.stringValue {
                XCTAssertEqual(try run(), want, source)
            } else {
                XCTAssertThrowsError(try run(), source) {
                    XCTAssertEqual(($0 as? JinjaError)?.raised, c["raised"] == .bool(true), source)
                    if c["raised"] == .bool(true) { XCTAssertEqual(($0 as? JinjaError)?.message, c["error"]?.stringValue, source) }
                }
            }
        }
    }

    /// Supervised fine-tuning puts the loss on the assistant's turns: found for any template by rendering
    /// the conversation up to each assistant turn, the pieces rejoin to the whole rendering.
    func testAssistantSegmentsOfEveryTemplate() throws {
        guard case .object(let templates)? = try reference()["templates"] else { return XCTFail("no templates") }
        let ends = ["smollm2": "<|im_end|>", "qwen2.5": "<|im_end|>", "llama-3.1": "<|eot_id|>", "mistral-7b-v0.2": "</s>",
                    "mistral-nemo": "</s>", "gemma-2": "<end_of_turn>", "gemma-3": "<end_of_turn>"]
        let conversation = [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello!"),
                            ChatMessage(role: "user", content: "And?"), ChatMessage(role: "assistant", content: "Bye.")]
        for (name, t) in templates {
            let tmpl = try template(name, t["special_tokens"])
            let segments = try tmpl.segments(conversation)
            XCTAssertEqual(segments.map(\.text).joined(), try tmpl.render(conversation, addGenerationPrompt: false), name)
            let end = try XCTUnwrap(ends[name])
            XCTAssertEqual(segments.filter(\.assistant).map(\.text), ["Hello!" + end, "Bye." + end], name)
        }
    }
}

/// What a template may not do: be unreadable, or render without bound.
final class ChatTemplateLimitsTests: XCTestCase {
    func render(_ source: String) throws -> String {
        try ChatTemplate(template: source).render([ChatMessage(role: "user", content: "x")])
    }

    func testBrokenTemplatesAreRefusedWithTheLine() {
        for (source, message) in [
            ("ok\n{% if x %}unclosed", "line 2: the template ends inside a block"),
            ("{{ 'a' + }}", "line 1: expected an expression"),
            ("a\n\nb {% frobnicate %}", "line 3: the statement 'frobnicate' is not supported"),
            ("{{ x | nosuchfilter }}", nil),
            ("{% endif %}", "line 1: 'endif' without its opening tag"),
            ("{{ 'open", "line 1: a string is not closed"),
        ] {
            do {
                _ = try render(source)
                XCTFail("rendered: \(source)")
            } catch {
                if let message { XCTAssertTrue("\(error)".contains(message), "\(error)") }
            }
        }
    }

    func testRenderingIsBounded() {
        let nested = String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000)
        for source in [
            "{{ \(nested) }}",                                                        // parser nesting
            String(repeating: "{% if true %}", count: 500) + "x",                    // block nesting
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",                 // unbounded recursion
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",  // work
            "{{ 'x' * 1000000000000 }}",                                             // memory
            "{% set s = 'xxxxxxxxxx' %}{% for i in range(30) %}{% set s = s + s %}{% endfor %}{{ s }}",
            "{{ range(10000000000) | length }}",
            // Work in proportion to size (found by fuzz-chat-template: sorting a long string's characters
            // took seconds in 2 steps): 200 M characters copied in 100 steps, 20 sorts of a million characters.
            "{% set s = 'x' * 1000000 %}{% for i in range(100) %}{% set t = s + s %}{% endfor %}",
            "{% set s = 'ba' * 500000 %}{% for i in range(20) %}{% set t = s|sort %}{% endfor %}",
        ] {
            // refused while parsing (a TokenizerError naming the line) or while rendering, never the template's own refusal
            XCTAssertThrowsError(try render(source), String(source.prefix(80))) { XCTAssertNotEqual(($0 as? JinjaError)?.raised, true, "\($0)") }
        }
    }

    /// Found by fuzz-chat-template (LeakSanitizer): a namespace holding itself outlived the render.
    func testNamespacesAreFreedEvenWhenTheyHoldThemselves() throws {
        let before = JinjaNamespace.alive.value
        let source = try String(contentsOfFile: projectRoot + "/Tests/Fixtures/hostile/chat-template-namespace-cycle.jinja", encoding: .utf8)
        _ = try render(source)
        _ = try render("{% set a = namespace() %}{% set b = namespace(other=a) %}{% set a.other = b %}{{ 'x' }}")
        XCTAssertEqual(JinjaNamespace.alive.value, before)
    }

    func testBuiltInAndFileTemplates() throws {
        let chatml = try ChatTemplate(named: "chatml")
        XCTAssertEqual(try chatml.render([ChatMessage(role: "user", content: "Hi")]), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        let path = NSTemporaryDirectory() + "graft-template-\(UUID().uuidString).jinja"
        try "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try ChatTemplate(named: path, specialTokens: ["bos_token": "<s>"])
        XCTAssertEqual(try file.render([ChatMessage(role: "user", content: "Hi")]), "<s>[user] Hi\n")
        XCTAssertThrowsError(try ChatTemplate(named: "/nonexistent/template.jinja")) { XCTAssertTrue("\($0)".contains("/nonexistent/template.jinja")) }
    }
}
