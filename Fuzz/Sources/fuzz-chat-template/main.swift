import Foundation
import FuzzDriver
import GraftFormats
import GraftText

// Chat templates: any bytes as the Jinja template a model ships (tokenizer_config.json or GGUF metadata),
// parsed as `graft chat` and `graft serve` parse it, then rendered (with special tokens and tools) for a
// conversation with and without a system turn. Refusals are errors; a crash, a hang or a sanitizer
// report is a finding — templates come with downloaded models.
let conversations: [[ChatMessage]] = [
    [ChatMessage(role: "user", content: "Hi!")],
    [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "2+2?"),
     ChatMessage(role: "assistant", content: "4"), ChatMessage(role: "user", content: "<|im_end|> and {{ x }}")],
]
// A tenth of the steps a template may take in Graft, so that rendering to the budget stays under the fuzzer's
// 1 s timeout in this unoptimised, address-sanitised build: a timeout is then a step that is not counted.
var limits = JinjaLimits()
limits.steps = 200_000
// Parsed on each run: a JSONValue held in a global is reported as a leak by LeakSanitizer, which does not see
// the pointers Swift stores with enum tags in their spare bits.
let toolsJSON = #"[{"type": "function", "function": {"name": "add", "parameters": {"a": 1, "b": [2.5, null, true]}}}]"#
fuzz { bytes in
    guard let t = try? ChatTemplate(template: String(decoding: bytes, as: UTF8.self),
                                    specialTokens: ["bos_token": "<s>", "eos_token": "</s>"], limits: limits) else { return }
    for c in conversations {
        _ = try? t.render(c)
        _ = try? t.render(c, addGenerationPrompt: false)
    }
    let tools = try? JSONValue.parse(Array(toolsJSON.utf8))
    _ = try? t.render(messages: conversations[1].map { .object([("role", .string($0.role)), ("content", .string($0.content))]) },
                      addGenerationPrompt: true, tools: tools)
}
