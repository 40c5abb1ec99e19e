import ArgumentParser
import Foundation
import GraftFormats
import GraftModels
import GraftText

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Logits at the last position of a text (a debugging tool, like transformers' model(ids).logits[-1]).",
        discussion: """
        Examples:
          graft logits --model smollm2 "The capital of France is"        # top 10 next tokens
          graft logits --model smollm2 --json "The capital of France is" > logits.json
        """)

    @Option(help: "A .gguf file or a fetched model's short name (smollm2).")
    var model: String

    @Flag(help: "Print all logits as JSON.")
    var json = false

    @Option(help: "Show this many top tokens (without --json).")
    var top: Int = 10

    @Argument(help: "The text (no special tokens are added).")
    var text: String

    func run() throws {
        let path = try ModelLocator.resolve(model)
        guard path.hasSuffix(".gguf") else { throw ValidationError("logits needs a causal LM in GGUF for now (got \(path))") }
        let lm = try CausalLM(gguf: path)
        let ids = lm.tokenizer.encode(text, addSpecialTokens: true)
        guard !ids.isEmpty else { throw ValidationError("the text encodes to no tokens") }
        var cache = lm.model.makeCache()
        let logits = try lm.model.forward(ids, cache: &cache)[0]
        if json {
            print(JSONValue.object([("ids", .array(ids.map { .int(Int64($0)) })), ("logits", .array(logits.map { .double(Double($0)) }))]).serialized())
            return
        }
        for (i, v) in logits.enumerated().sorted(by: { $0.element > $1.element }).prefix(top) {
            print(String(format: "%6d  %9.4f  %@", i, v, String(reflecting: lm.tokenizer.decode([i], skipSpecialTokens: false))))
        }
    }
}
