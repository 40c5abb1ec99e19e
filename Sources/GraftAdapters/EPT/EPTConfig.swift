import Foundation
import GraftFormats
import GraftTensor

/// How to build a new EPT adapter (Lan et al., AAAI 2025, "Efficient Prompt Tuning by Multi-Space
/// Projection and Prompt Fusion"): a short prompt of `virtualTokens` rows, DePT's low-rank update of the
/// tokens' input embeddings (rank `rank`, scale α/√r, `embeddingPositions` rows), prompt fusion and a
/// gated projection through `spaces` subspaces (`EPTPrompt` has the equations). Saved in PEFT's
/// prompt-learning folder layout with Graft's own `peft_type` "EPT" (PEFT has no EPT).
///
/// What is the paper's and what is Graft's: the abstract gives the parts — a short prompt plus two
/// low-rank matrices that update the frozen input embeddings (as DePT, whose code fixes A [positions × r]
/// Kaiming-uniform, B [r × d] zero, scale α/√r, and trains A and B at their own, lower learning rate),
/// a fusion module in which the short prompt takes knowledge from the low-rank matrices "via
/// attention", and a projection into several subspaces whose outputs a gating network weighs. Its
/// equations, its code and its settings were not available here, so the fusion (P attends to the rows
/// of A·B, residual) and the projection (K residual low-rank projections, softmax gate on the prompt's
/// mean row) are Graft's reading, and the defaults (10 tokens and rank 8, about the parameters of a
/// 20-token prompt on MiniLM, as DePT matches prompt tuning's; 4 spaces; α = 1, which does under one
/// learning rate what DePT's second rate does) are Graft's choice.
public struct EPTConfig: AdapterRecipe, Equatable {
    public var virtualTokens = 10
    public var rank = 8
    /// The embedding update's scale is α/√r: DePT trains A and B at a learning rate far below the
    /// prompt's (α = 8 there); under one learning rate a small α keeps L's steps near the prompt's.
    public var alpha = 1.0
    public var spaces = 4
    /// Token positions the low-rank embedding update covers (DePT's max_length); later tokens get none.
    public var embeddingPositions = 256
    /// The short prompt's start, as prompt tuning's (N(0, 1), a text's embeddings, or sampled words').
    public var initialisation: PromptTuningConfig.Initialisation = .random
    public var initText: String? = nil

    public init() {}

    static let info = AdapterMethodInfo(
        name: "ept", summary: "a short prompt fused with a low-rank update of the input embeddings and projected through gated subspaces (Lan et al. 2025)",
        peftType: "EPT", fusable: false,
        options: [("virtual-tokens", "the short prompt's length (default 10); it counts against the model's context"),
                  ("rank", "rank of the input-embedding update and width of each subspace (default 8)"),
                  ("alpha", "the embedding update's scale is alpha/√rank (default 1; DePT's 8 goes with its lower learning rate for A and B)"),
                  ("spaces", "subspaces the prompt is projected through, mixed by the gate (default 4)"),
                  ("embedding-positions", "token positions the embedding update covers (default 256); later tokens get none"),
                  ("init-text", "start the short prompt from this text's word embeddings"),
                  ("prompt-init", "random (N(0, 1), default), text (with --init-text) or sample-vocab")],
        recipe: { s in
            var c = EPTConfig()
            guard let p = try PromptTuningConfig.info.recipe(MethodSettings(targets: nil, llama: s.llama, values: s.values.filter { ["init-text", "prompt-init"].contains($0.key) }))
                    as? PromptTuningConfig else { throw LoRAError("EPT's prompt is prompt tuning's") }
            c.initialisation = p.initialisation; c.initText = p.initText
            c.virtualTokens = try s.int("virtual-tokens") ?? c.virtualTokens
            c.rank = try s.int("rank") ?? c.rank
            c.alpha = try s.double("alpha") ?? c.alpha
            c.spaces = try s.int("spaces") ?? c.spaces
            c.embeddingPositions = try s.int("embedding-positions") ?? c.embeddingPositions
            return c
        })

    public var method: String { "ept" }
    public var label: String { "EPT, \(virtualTokens) tokens, r=\(rank), \(spaces) spaces" }
    public var targets: ModuleTargets { ModuleTargets(names: []) }
    public var virtualPlacement: VirtualTokens.Placement? { .embeddings }
    public var savedNamePrefix: String { "base_model." }
    public var reservedPositions: Int { virtualTokens }

    public func validate() throws {
        for (name, v) in [("--virtual-tokens", virtualTokens), ("--rank", rank), ("--spaces", spaces), ("--embedding-positions", embeddingPositions)] where v < 1 {
            throw LoRAError("EPT \(name) must be a positive integer (got \(v))")
        }
        guard alpha > 0, alpha.isFinite else { throw LoRAError("EPT --alpha must be positive (got \(alpha))") }
        try PromptTuningConfig(virtualTokens: virtualTokens, initialisation: initialisation, initText: initText).validate()
    }

    public func makeVirtualTokens(layout: VirtualTokens.Layout, embed: ([Int]) throws -> FloatBuffer, tokenize: (String) throws -> [Int],
                                  seed: UInt64) throws -> VirtualTokens {
        let p = try PromptTuningConfig(virtualTokens: virtualTokens, initialisation: initialisation, initText: initText)
            .makeVirtualTokens(layout: layout, embed: embed, tokenize: tokenize, seed: seed).values
        let d = layout.hidden, r = rank, s = embeddingPositions, K = spaces
        var rng = SeededRNG(seed: seed, key: "ept")
        func uniform(_ n: Int, bound: Float) -> FloatBuffer { FloatBuffer((0..<n).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound }) }
        // A as DePT's Kaiming-uniform (fan-in r), B zero; the subspaces' down-projections of unit variance
        // (their product is scaled by 1/√d), their up-projections and the gate zero: the prompt starts as
        // P, the embeddings unchanged.
        let source = EPTPrompt(prompt: p, a: uniform(s * r, bound: 1 / Float(r).squareRoot()), b: FloatBuffer(repeating: 0, count: r * d),
                               down: uniform(K * d * r, bound: Float(3).squareRoot()), up: FloatBuffer(repeating: 0, count: K * r * d),
                               gateWeight: FloatBuffer(repeating: 0, count: K * d), gateBias: FloatBuffer(repeating: 0, count: K),
                               width: d, rank: r, spaces: K, scale: Float(alpha / Double(r).squareRoot()))
        return source.makeTokens()
    }

    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        VirtualTokenAdapter.config(peftType: "EPT", virtualTokens: virtualTokens, taskType: taskType, baseModel: baseModel,
                                   modulesToSave: modulesToSave, extra: [
            ("r", .int(Int64(rank))), ("lora_alpha", alpha == alpha.rounded() ? .int(Int64(alpha)) : .double(alpha)),
            ("num_spaces", .int(Int64(spaces))), ("embedding_positions", .int(Int64(embeddingPositions))),
            ("prompt_tuning_init", .string(initialisation.rawValue)), ("prompt_tuning_init_text", initText.map { .string($0) } ?? .null),
        ])
    }
}
