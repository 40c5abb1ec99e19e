import Foundation
import FuzzDriver
import GraftText

// Chat templates: any bytes as the Jinja template a model ships (tokenizer_config.json or GGUF metadata),
// recognised as `graft chat` recognises it, then rendering a conversation with and without a system turn.
let conversations: [[ChatMessage]] = [
    [ChatMessage(role: "user", content: "Hi!")],
    [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "2+2?"),
     ChatMessage(role: "assistant", content: "4"), ChatMessage(role: "user", content: "<|im_end|> and {{ x }}")],
]
fuzz { bytes in
    guard let t = try? ChatTemplate(template: String(decoding: bytes, as: UTF8.self)) else { return }
    for c in conversations {
        _ = t.render(c)
        _ = t.render(c, addGenerationPrompt: false)
    }
}
