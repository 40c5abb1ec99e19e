import Foundation
import GraftFormats
import GraftTensor

/// How to build a new LoRA (or DoRA) adapter, with PEFT's meanings: rank r, alpha (scaling α/r, or
/// α/√r with rsLoRA), dropout on the adapter's input, target modules, layers to transform. `init`
/// options follow PEFT's `LoraConfig`.
public struct LoRAConfig: AdapterRecipe, Equatable {
    public var rank: Int
    public var alpha: Double
    public var dropout: Double = 0
    public var useRSLoRA = false
    public var useDoRA = false
    public var targets: ModuleTargets

    public init(rank: Int, alpha: Double, targetModules: [String]) {
        self.rank = rank; self.alpha = alpha; self.targets = ModuleTargets(names: targetModules)
    }

    /// The rank when none is given; alpha defaults to twice the rank.
    public static let defaultRank = 8

    /// Target modules when none are given: query and value (BERT), q_proj and v_proj (Llama), as PEFT's
    /// `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`.
    public static func defaultTargets(llama: Bool) -> [String] { llama ? ["q_proj", "v_proj"] : ["query", "value"] }

    static let options: [(name: String, help: String)] = [
        ("rank", "rank r (default \(defaultRank))"), ("alpha", "alpha (default 2·rank); scaling alpha/r, or alpha/√r with --rslora"),
        ("dropout", "dropout on the adapter's input in training (default 0)"), ("rslora", "rsLoRA scaling alpha/√r"),
    ]

    static func recipe(_ s: MethodSettings, dora: Bool) throws -> any AdapterRecipe {
        let r = try s.int("rank") ?? defaultRank
        var c = LoRAConfig(rank: r, alpha: try s.double("alpha") ?? Double(2 * r), targetModules: [])
        c.targets = s.targets ?? ModuleTargets(names: defaultTargets(llama: s.llama))
        c.dropout = try s.double("dropout") ?? 0
        c.useRSLoRA = s.bool("rslora")
        c.useDoRA = dora
        return c
    }

    static let info = AdapterMethodInfo(
        name: "lora", summary: "low-rank update y += s·(x·Aᵀ)·Bᵀ (Hu et al. 2021)", peftType: "LORA", fusable: true,
        options: options, recipe: { try recipe($0, dora: false) })
    static let doraInfo = AdapterMethodInfo(
        name: "dora", summary: "LoRA on the weight's direction plus a trained magnitude per output (Liu et al. 2024); PEFT's LoRA with use_dora",
        peftType: "LORA", fusable: true, options: options, recipe: { try recipe($0, dora: true) })

    public var method: String { useDoRA ? "dora" : "lora" }
    public var label: String { "\(useDoRA ? "DoRA" : "LoRA") r=\(rank)" }

    /// Module-name suffixes (`query`, `self_attn.q_proj`) or `all-linear`.
    public var targetModules: [String] { get { targets.names } set { targets.names = newValue } }
    /// One regular expression matched against the whole module path.
    public var targetRegex: String? { get { targets.regex } set { targets.regex = newValue } }
    /// Only these layer indices (nil: every layer).
    public var layersToTransform: [Int]? { get { targets.layers } set { targets.layers = newValue } }

    /// No low-rank modules at all (targets "none"): only fully trained modules such as a classifier
    /// head — a linear probe on frozen features.
    public var headOnly: Bool { targets.isEmpty }

    public var scaling: Double { useRSLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank) }

    public func validate() throws {
        guard rank > 0 else { throw LoRAError("LoRA rank must be a positive integer (got \(rank))") }
        guard alpha > 0, alpha.isFinite else { throw LoRAError("lora_alpha must be positive (got \(alpha))") }
        guard dropout >= 0 && dropout < 1 else { throw LoRAError("lora_dropout must be in [0, 1) (got \(dropout))") }
    }

    /// The modules of `available` (module paths of a model's linear layers) this config targets.
    public func targets(in available: [String]) throws -> [String] { try targets.select(in: available) }

    /// PEFT's initialisation: A Kaiming-uniform (a = √5, so U(−1/√in, 1/√in)) from a stream keyed by the
    /// module path, B zero; DoRA's magnitude = the row norms of W.
    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures inF: Int, outFeatures outF: Int, seed: UInt64) throws -> any LayerUpdate {
        var rng = SeededRNG(seed: seed, key: "lora_A/" + module)
        let bound = 1 / Float(inF).squareRoot()
        let a = FloatBuffer((0..<(rank * inF)).map { _ in (rng.nextUnitFloat() * 2 - 1) * bound })
        let b = FloatBuffer(repeating: 0, count: outF * rank)
        if useDoRA {
            return DoRAUpdate(a: a, b: b, magnitude: DoRAUpdate.initialMagnitude(weight, inFeatures: inF, outFeatures: outF),
                              rank: rank, scale: Float(scaling), dropout: Float(dropout))
        }
        return LoRAUpdate(a: a, b: b, rank: rank, scale: Float(scaling), dropout: Float(dropout))
    }

    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        LoRAWriter.configJSON(self, taskType: taskType, baseModel: baseModel, modulesToSave: modulesToSave)
    }
}
