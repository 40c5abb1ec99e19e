import Foundation
import GraftFormats
import GraftTensor

/// How to build a new prompt-tuning adapter (Lester et al. 2021; PEFT `PromptTuningConfig`): `virtualTokens`
/// learned input embeddings put ahead of every sequence's tokens, the model and its linear layers frozen.
/// They start as the word embeddings of a text (PEFT's `TEXT` init: its token ids, special tokens included,
/// cut or repeated to fill the prompt), of tokens drawn at random from the vocabulary (`SAMPLE_VOCAB`), or
/// as N(0, 1) draws (`RANDOM`, PEFT's default, as `torch.nn.Embedding` initialises).
public struct PromptTuningConfig: AdapterRecipe, Equatable {
    public enum Initialisation: String, Sendable, CaseIterable { case random = "RANDOM", text = "TEXT", sampleVocab = "SAMPLE_VOCAB" }

    public var virtualTokens: Int
    public var initialisation: Initialisation
    /// The text whose embeddings start the prompt (`TEXT`).
    public var initText: String?
    /// Saved as `tokenizer_name_or_path` (PEFT reads the tokenizer from it for a `TEXT` init).
    public var tokenizerPath: String?

    public init(virtualTokens: Int, initialisation: Initialisation = .random, initText: String? = nil) {
        self.virtualTokens = virtualTokens; self.initialisation = initialisation; self.initText = initText
    }

    /// Virtual tokens when none is given (PEFT's examples use 20; the paper's gains level off near there).
    public static let defaultVirtualTokens = 20

    static let info = AdapterMethodInfo(
        name: "prompt", summary: "learned input embeddings ahead of every sequence; the model stays frozen (Lester et al. 2021, prompt tuning)",
        peftType: "PROMPT_TUNING", fusable: false,
        options: [("virtual-tokens", "prompt length in virtual tokens (default \(defaultVirtualTokens)); they count against the model's context"),
                  ("init-text", "start the prompt from this text's word embeddings (PEFT's TEXT init) instead of random ones"),
                  ("prompt-init", "random (N(0, 1), PEFT's default), text (with --init-text) or sample-vocab (the embeddings of tokens drawn from the vocabulary)")],
        recipe: { s in
            let text = s.values["init-text"]
            var initialisation: Initialisation = text == nil ? .random : .text
            if let i = s.values["prompt-init"] {
                guard let v = ["random": Initialisation.random, "text": .text, "sample-vocab": .sampleVocab][i.lowercased()] else {
                    throw LoRAError("--prompt-init: '\(i)' is not random, text or sample-vocab")
                }
                initialisation = v
            }
            if text != nil && initialisation != .text { throw LoRAError("--init-text goes with --prompt-init text (got \(initialisation.rawValue))") }
            return PromptTuningConfig(virtualTokens: try s.int("virtual-tokens") ?? defaultVirtualTokens, initialisation: initialisation, initText: text)
        })

    public var method: String { "prompt" }
    public var label: String { "prompt tuning, \(virtualTokens) tokens" }
    public var targets: ModuleTargets { ModuleTargets(names: []) }
    public var virtualPlacement: VirtualTokens.Placement? { .embeddings }
    public var savedNamePrefix: String { "base_model." }
    public var reservedPositions: Int { virtualTokens }

    public func validate() throws {
        guard virtualTokens > 0 else { throw LoRAError("prompt tuning needs at least one virtual token (got \(virtualTokens))") }
        if initialisation == .text, (initText ?? "").trimmingCharacters(in: .whitespaces).isEmpty {
            throw LoRAError("prompt tuning's text initialisation needs a non-empty --init-text")
        }
    }

    public func makeVirtualTokens(layout: VirtualTokens.Layout, embed: ([Int]) throws -> FloatBuffer, tokenize: (String) throws -> [Int],
                                  seed: UInt64) throws -> VirtualTokens {
        guard virtualTokens < layout.contextLength else {
            throw LoRAError("\(virtualTokens) virtual tokens fill the model's context of \(layout.contextLength) positions: nothing left for the text")
        }
        let values: FloatBuffer
        switch initialisation {
        case .random:
            var rng = SeededRNG(seed: seed, key: "prompt")
            values = FloatBuffer((0..<(virtualTokens * layout.hidden)).map { _ in rng.nextNormal() })
        case .text:
            let ids = try tokenize(initText ?? "")
            guard !ids.isEmpty else { throw LoRAError("--init-text '\(initText ?? "")' tokenizes to no tokens") }
            values = try embed(Self.repeated(ids, to: virtualTokens))
        case .sampleVocab:
            // PEFT: token ids uniform over the vocabulary, their word embeddings.
            var rng = SeededRNG(seed: seed, key: "prompt-vocab")
            values = try embed((0..<virtualTokens).map { _ in Int(rng.next() % UInt64(layout.vocabulary)) })
        }
        return VirtualTokens(placement: .embeddings, count: virtualTokens, width: layout.hidden, values: values)
    }

    /// PEFT's text init: the ids cut to `count`, or repeated until they fill it.
    public static func repeated(_ ids: [Int], to count: Int) -> [Int] {
        (0..<count).map { ids[$0 % ids.count] }
    }

    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        VirtualTokenAdapter.config(peftType: "PROMPT_TUNING", virtualTokens: virtualTokens, taskType: taskType, baseModel: baseModel,
                                   modulesToSave: modulesToSave, extra: [
            ("prompt_tuning_init", .string(initialisation.rawValue)),
            ("prompt_tuning_init_text", initText.map { .string($0) } ?? .null),
            ("tokenizer_kwargs", .null),
            ("tokenizer_name_or_path", (tokenizerPath ?? (initialisation == .text ? baseModel : nil)).map { .string($0) } ?? .null),
        ])
    }
}
