import ArgumentParser
import Foundation
import GraftFormats
import GraftModels
import GraftTensor
import GraftText

/// Texts from arguments, or one per line from standard input when none are given.
func readTexts(_ args: [String]) throws -> [String] {
    if !args.isEmpty { return args }
    var lines: [String] = []
    while let l = readLine(strippingNewline: true) { if !l.isEmpty { lines.append(l) } }
    guard !lines.isEmpty else { throw ValidationError("no text given (pass TEXT arguments or lines on standard input)") }
    return lines
}

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of a text, as the model's tokenizer gives them.",
        discussion: """
        Examples:
          graft tokenize --model minilm "A man is playing a guitar."
          graft tokenize --model ~/models/my-bert --json --no-special "Hello, world"
        """)

    @Option(help: "Model folder with tokenizer.json, a .gguf file, or a fetched model's short name (minilm, smollm2).")
    var model: String

    @Flag(help: "Print JSON: {\"ids\": [...], \"tokens\": [...]}.")
    var json = false

    @Flag(help: "Do not add the special tokens of the post-processor ([CLS], [SEP], …).")
    var noSpecial = false

    @Argument(help: "Text(s) to tokenize (default: lines of standard input).")
    var text: [String] = []

    func run() throws {
        let path = try ModelLocator.resolve(model)
        let tok = try TokenizerLoader.load(model: path)
        for t in try readTexts(text) {
            let ids = tok.encode(t, addSpecialTokens: !noSpecial)
            if json {
                let obj = JSONValue.object([("ids", .array(ids.map { .int(Int64($0)) })),
                                            ("tokens", .array(ids.map { .string(tok.token(of: $0) ?? "") }))])
                print(obj.serialized())
            } else {
                print(ids.map(String.init).joined(separator: " "))
            }
        }
    }
}

struct EmbedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "embed",
        abstract: "Sentence embeddings from a sentence-transformers model (BERT + pooling + normalisation).",
        discussion: """
        Examples:
          graft embed --model minilm "A man is playing a guitar." "A woman plays the violin."
          cat sentences.txt | graft embed --model minilm --json > embeddings.jsonl
        """)

    @Option(help: "sentence-transformers model folder, or a fetched model's short name (minilm).")
    var model: String

    @Flag(help: "Print one JSON object per text: {\"text\", \"embedding\"}.")
    var json = false

    @Option(help: "Texts per forward pass.")
    var batchSize: Int = 32

    @Flag(help: "Multiply in bf16 (float32 sums): faster on CPUs with AVX512-BF16; embeddings move by ~1e-3 (cosine ≈ 0.9999 to float32).")
    var bf16 = false

    @Argument(help: "Text(s) to embed (default: lines of standard input).")
    var text: [String] = []

    func validate() throws { if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") } }

    func run() throws {
        Linalg.useSingleThreadedBLAS()  // the encoder splits its products and attention over the cores itself
        var enc = try SentenceEncoder(folder: try ModelLocator.resolve(model))
        if bf16 { enc.enableBF16() }
        let texts = try readTexts(text)
        let embs = try enc.embed(texts, batchSize: batchSize)
        for (t, e) in zip(texts, embs) {
            if json {
                print(JSONValue.object([("text", .string(t)), ("embedding", .array(e.map { .double(Double($0)) }))]).serialized())
            } else {
                print(e.map { String(format: "%.6f", $0) }.joined(separator: " "))
            }
        }
    }
}
