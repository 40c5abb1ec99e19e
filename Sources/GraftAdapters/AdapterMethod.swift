import Foundation
import GraftFormats
import GraftTensor

/// An adapter folder read from disk (HF PEFT's layout: `adapter_config.json` + `adapter_model.safetensors`),
/// of any method in the registry: what a model attaches (inference, evaluation, continued training), and
/// what `graft fuse` and `model+adapter` merge inputs fold into the base weights.
public protocol LoadedAdapter: AnyObject, Sendable {
    var path: String { get }
    var config: PEFTAdapterConfig { get }
    /// The method's name in `AdapterMethods` (`lora`, `dora`, `ia3`).
    var method: String { get }
    /// The module paths the adapter updates, as PEFT names them (without `base_model.model.`).
    var moduleNames: [String] { get }
    /// Full tensors saved beside the updates (`modules_to_save`, e.g. a classification head), by their
    /// name in the model (no PEFT prefix, no `modules_to_save.default` infix).
    var savedTensors: [(String, Tensor)] { get }
    /// Fresh updates (their own copies of the tensors) by module path; `dropout` for methods that have it.
    func layerUpdates(dropout: Float) -> [(module: String, update: any LayerUpdate)]
    /// How the adapter folds into `checkpoint`'s tensors: tensor name → its new value from its old. A
    /// module that finds no weight of the shape it needs is an error naming both.
    func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold]
    /// The recipe that continues training this adapter (its own settings; `dropout` is the new run's).
    func recipe(dropout: Double) throws -> any AdapterRecipe
    /// Frozen tensors the modules share, saved once beside them (VeRA's random projections).
    var sharedTensors: [SharedTensor] { get }
    /// The adapter's settings in a few words, for a fused model's card (`r = 8, alpha = 16`).
    var settingsSummary: String { get }
    /// The virtual tokens of a method that adds to the sequence (prompt, prefix); nil for the others.
    func virtualTokens() throws -> VirtualTokens?
    /// Fresh updates at sublayer sites (bottleneck adapters); none for the other methods.
    func sublayerUpdates() -> [SublayerSiteUpdate]
}

/// A frozen tensor an adapter's modules share, under its full name in the adapter file (`base_model.vera_A`).
public struct SharedTensor: @unchecked Sendable {
    public let name: String
    public let value: FloatBuffer
    public let shape: [Int]
    public init(name: String, value: FloatBuffer, shape: [Int]) { self.name = name; self.value = value; self.shape = shape }
}

/// A linear layer a recipe will adapt: its module path, frozen weight W [out × in] and shape.
public struct TargetLayer: @unchecked Sendable {
    public let module: String
    public let weight: FloatBuffer
    public let inFeatures: Int, outFeatures: Int
    public init(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int) {
        self.module = module; self.weight = weight; self.inFeatures = inFeatures; self.outFeatures = outFeatures
    }
}

/// A tensor's new value from its old, when an adapter is folded into it.
public typealias TensorFold = @Sendable (FloatBuffer) -> FloatBuffer

/// How `graft train` builds a new adapter of one method: which modules, how each update starts (PEFT's
/// initialisation), and the `adapter_config.json` it saves with.
public protocol AdapterRecipe: Sendable {
    /// The method's name in `AdapterMethods`.
    var method: String { get }
    var targets: ModuleTargets { get }
    func validate() throws
    /// A new update for the layer at `module` with weight W [out × in], initialised as PEFT does.
    func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate
    /// The updates for every targeted layer at once, and the frozen tensors they share (a method whose
    /// modules share something — VeRA's projections — sees all the layers first). Default: `makeUpdate`
    /// per layer, nothing shared.
    func makeUpdates(for layers: [TargetLayer], seed: UInt64) throws -> (updates: [any LayerUpdate], shared: [SharedTensor])
    /// The `adapter_config.json` PEFT 0.21 reads back for this recipe.
    func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue
    /// A short label for reports (`LoRA r=8`, `IA³`).
    var label: String { get }
    /// Dropout on the update's input in training (methods that have it).
    var dropout: Double { get }
    /// Where a method that adds to the sequence puts its virtual tokens (prompt or prefix tuning); nil
    /// for the methods that update linear layers.
    var virtualPlacement: VirtualTokens.Placement? { get }
    /// Positions of the model's context the method's virtual tokens take (0 for the per-layer methods).
    var reservedPositions: Int { get }
    /// Whether the targeted layers' own weights train (full fine-tuning) instead of an update on them.
    var trainsBaseWeights: Bool { get }
    /// New virtual tokens for a model of `layout`, initialised as PEFT does: `embed` gives word-embedding
    /// rows, `tokenize` a text's token ids (as the model's tokenizer encodes it, special tokens included).
    func makeVirtualTokens(layout: VirtualTokens.Layout, embed: ([Int]) throws -> FloatBuffer, tokenize: (String) throws -> [Int],
                           seed: UInt64) throws -> VirtualTokens
    /// What the adapter file puts before a `modules_to_save` tensor's model name: `base_model.model.` for
    /// the per-layer methods, `base_model.` for prompt learning (its PEFT model wraps the task model directly).
    var savedNamePrefix: String { get }
    /// What the method adds to the training loop (a regulariser, a rank schedule) for the updates it
    /// made, in a run of `totalSteps` optimizer steps (`seed`: the run's, for what it draws); nil for
    /// the methods that add nothing.
    func makeTrainingHook(modules: [TrainedModule], totalSteps: Int, seed: UInt64) throws -> (any AdapterTrainingHook)?
    /// Training examples the method's initialisation reads before its updates are made (CorDA's
    /// covariance pass: the trainer runs the model on them with a `CovarianceProbe` on every target); 0
    /// for the methods that need none.
    var calibrationCount: Int { get }
    /// The recipe with each targeted module's input covariance [in × in] from that pass.
    func calibrated(_ covariances: [String: [Double]]) -> any AdapterRecipe
    /// Whether the method puts updates at sublayer sites (bottleneck adapters) instead of on linear layers.
    var addsSublayerUpdates: Bool { get }
    /// Those updates for a model of `layers` layers `hidden` wide, initialised as the method's library does.
    func makeSublayerUpdates(layers: Int, hidden: Int, seed: UInt64) throws -> [SublayerSiteUpdate]
    /// Writes the adapter folder's files: PEFT's two by default (`config` from `peftConfig`); a method
    /// saved in another format (AdapterHub's) writes its own, knowing the model's `layout`.
    func writeAdapter(to directory: String, config: JSONValue, tensors: [(String, Tensor)], layout: VirtualTokens.Layout, baseModel: String) throws
}

extension AdapterRecipe {
    public var dropout: Double { 0 }
    public var virtualPlacement: VirtualTokens.Placement? { nil }
    public var reservedPositions: Int { 0 }
    public var trainsBaseWeights: Bool { false }
    public var savedNamePrefix: String { LoRAAdapter.prefix }
    public func makeTrainingHook(modules: [TrainedModule], totalSteps: Int, seed: UInt64) throws -> (any AdapterTrainingHook)? { nil }
    public var calibrationCount: Int { 0 }
    public func calibrated(_ covariances: [String: [Double]]) -> any AdapterRecipe { self }
    public var addsSublayerUpdates: Bool { false }
    public func makeSublayerUpdates(layers: Int, hidden: Int, seed: UInt64) throws -> [SublayerSiteUpdate] { [] }
    public func writeAdapter(to directory: String, config: JSONValue, tensors: [(String, Tensor)], layout: VirtualTokens.Layout, baseModel: String) throws {
        try LoRAWriter.write(to: directory, config: config, tensors: tensors)
    }

    /// Whether the recipe trains nothing but a classification head (no targets, no virtual tokens: a linear probe).
    public var isHeadOnly: Bool { targets.isEmpty && virtualPlacement == nil && !addsSublayerUpdates }

    public func makeVirtualTokens(layout: VirtualTokens.Layout, embed: ([Int]) throws -> FloatBuffer, tokenize: (String) throws -> [Int],
                                  seed: UInt64) throws -> VirtualTokens {
        throw LoRAError("\(label) adds no virtual tokens")
    }

    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate {
        throw LoRAError("\(label) does not update linear layers")
    }

    public func makeUpdates(for layers: [TargetLayer], seed: UInt64) throws -> (updates: [any LayerUpdate], shared: [SharedTensor]) {
        (try layers.map { try makeUpdate(module: $0.module, weight: $0.weight, inFeatures: $0.inFeatures, outFeatures: $0.outFeatures, seed: seed) }, [])
    }
}

/// One adapter method in the registry: its name, what it does, its PEFT type, and whether its update
/// folds into the weights (`graft fuse`, merges).
public struct AdapterMethodInfo: Sendable {
    public let name: String
    public let summary: String
    /// PEFT's `peft_type` of its folders (empty: the method writes a model, not an adapter).
    public let peftType: String
    /// Whether the update can be folded into the base weights.
    public let fusable: Bool
    /// The `graft train` options it reads besides the targets, with their help.
    public let options: [(name: String, help: String)]
    /// Builds the method's recipe from the options given (its defaults where not).
    public let recipe: @Sendable (MethodSettings) throws -> any AdapterRecipe
    /// What the method writes, when not a PEFT folder of `peftType` (nil: that folder, or with no type a model).
    public var writes: String? = nil
}

/// The settings `graft train` (or a config file) gives a method: the targets when chosen, the
/// architecture (for the method's default targets), and the method's own options as written.
public struct MethodSettings: Sendable {
    /// nil: the method's default targets for the architecture.
    public var targets: ModuleTargets?
    /// Llama-architecture model (else BERT), for the default targets.
    public var llama: Bool
    /// Option name (as in `AdapterMethodInfo.options`) → its value as given.
    public var values: [String: String]

    public init(targets: ModuleTargets?, llama: Bool, values: [String: String]) {
        self.targets = targets; self.llama = llama; self.values = values
    }

    public func int(_ k: String) throws -> Int? {
        try values[k].map { v in guard let i = Int(v) else { throw LoRAError("--\(k): '\(v)' is not an integer") }; return i }
    }
    public func double(_ k: String) throws -> Double? {
        try values[k].map { v in guard let d = Double(v) else { throw LoRAError("--\(k): '\(v)' is not a number") }; return d }
    }
    public func bool(_ k: String) -> Bool { values[k].map { ["true", "1", "yes"].contains($0.lowercased()) } ?? false }
    public func list(_ k: String) -> [String]? {
        values[k].map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    }
}

/// The adapter methods Graft knows. Adding one = a folder beside `LoRA/` with its `LayerUpdate`, its
/// `AdapterRecipe`, its `LoadedAdapter` reader, and one line in `all` and (for a new PEFT type) `readers`.
public enum AdapterMethods {
    public static let all: [AdapterMethodInfo] = [LoRAConfig.info, LoRAConfig.doraInfo, ALLoRAConfig.info, AdaLoRAConfig.info, IncreLoRAConfig.info, TriAdaptLoRAConfig.info, CorDAConfig.info, IA3Config.info, BottleneckConfig.info, VeRAConfig.info, NOLAConfig.info,
                                                  PromptTuningConfig.info, EPTConfig.info, PrefixTuningConfig.info, FullFineTuningConfig.info]

    /// Readers by PEFT `peft_type`.
    static let readers: [String: @Sendable (String, PEFTAdapterConfig) throws -> any LoadedAdapter] = [
        "LORA": { try LoRAAdapter(path: $0, config: $1) },
        "ADALORA": { try AdaLoRAAdapter(path: $0, config: $1) },
        "IA3": { try IA3Adapter(path: $0, config: $1) },
        "VERA": { try VeRAAdapter(path: $0, config: $1) },
        "NOLA": { try NOLAAdapter(path: $0, config: $1) },
        "PROMPT_TUNING": { try VirtualTokenAdapter(path: $0, config: $1) },
        "PREFIX_TUNING": { try VirtualTokenAdapter(path: $0, config: $1) },
        "EPT": { try EPTAdapter(path: $0, config: $1) },
    ]

    /// The registry as text: each method, what it does, its PEFT type, whether it folds, its options.
    public static var description: String {
        all.map { m in
            var s = "\(m.name)\n    \(m.summary)\n    "
            s += m.writes.map { $0 + "; cannot be folded into the weights" } ?? (m.peftType.isEmpty ? "output: an HF model folder (merge it like any fine-tune)"
                : "adapter_config.json peft_type \(m.peftType); \(m.fusable ? "folds into the weights (graft fuse, merges)" : "cannot be folded into the weights")")
            for o in m.options { s += "\n    --\(o.name): \(o.help)" }
            return s
        }.joined(separator: "\n")
    }

    public static func named(_ name: String) throws -> AdapterMethodInfo {
        guard let m = all.first(where: { $0.name == name.lowercased() }) else {
            throw LoRAError("unknown adapter method '\(name)' (known: \(all.map(\.name).joined(separator: ", ")))")
        }
        return m
    }

    /// Reads an adapter folder of any known method.
    public static func open(_ path: String) throws -> any LoadedAdapter {
        let configPath = (path as NSString).appendingPathComponent("adapter_config.json")
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw FormatError(path, nil, "not a PEFT adapter folder (no adapter_config.json)")
        }
        if let hub = try BottleneckAdapter.openIfAdapterHub(path) { return hub }
        let config = try PEFTAdapterConfig(path: configPath)
        guard let read = readers[config.peftType] else {
            throw FormatError(configPath, "peft_type", "'\(config.peftType)' is not a method Graft knows (known: \(readers.keys.sorted().joined(separator: ", ")))")
        }
        return try read(path, config)
    }
}

extension LoadedAdapter {
    public var sharedTensors: [SharedTensor] { [] }
    public func virtualTokens() throws -> VirtualTokens? { nil }
    public func sublayerUpdates() -> [SublayerSiteUpdate] { [] }

    /// The classification head saved in `modules_to_save` (`classifier` or `score`): weight [classes × hidden], bias.
    public func classificationHead() throws -> (weight: Tensor, bias: Tensor?)? {
        for stem in ["classifier", "score"] {
            guard let w = savedTensors.first(where: { $0.0 == stem + ".weight" || $0.0.hasSuffix("." + stem + ".weight") })?.1 else { continue }
            guard w.shape.count == 2 else { throw LoRAError("\(path): \(stem).weight is not a matrix") }
            let bias = savedTensors.first { $0.0 == stem + ".bias" || $0.0.hasSuffix("." + stem + ".bias") }?.1
            return (w, bias)
        }
        return nil
    }

    /// The adapter module for a base tensor's module path (`encoder.layer.0.attention.self.query`). PEFT
    /// module paths may carry the task model's prefix (`bert.`, `model.`) that a bare base checkpoint
    /// lacks, so a module matches when its path equals the tensor's or ends with "." + it.
    public func module(forPath path: String) -> String? {
        if moduleNames.contains(path) { return path }
        return moduleNames.sorted().first { $0.hasSuffix("." + path) }
    }

    /// The prefix (e.g. `bert.`) the adapter's module paths add to the base checkpoint's names, if any.
    public func namePrefix(relativeTo baseNames: [String]) -> String {
        let names = Set(baseNames)
        for key in moduleNames.sorted() where !names.contains(key + ".weight") {
            for bn in baseNames where bn.hasSuffix(".weight") {
                let path = String(bn.dropLast(7))
                if key.hasSuffix("." + path) { return String(key.dropLast(path.count)) }
            }
        }
        return ""
    }

    /// Base tensor name (`….weight`) → module, for every module; a module with no weight in `checkpoint`
    /// is an error that lists what the checkpoint has.
    public func weightTensors(in checkpoint: Checkpoint) throws -> [String: String] {
        var target: [String: String] = [:]
        for n in checkpoint.names where n.hasSuffix(".weight") {
            if let m = module(forPath: String(n.dropLast(7))) { target[n] = m }
        }
        let hit = Set(target.values)
        let known = checkpoint.names.filter { $0.hasSuffix(".weight") }.map { String($0.dropLast(7)) }
        for name in moduleNames.sorted() where !hit.contains(name) {
            throw LoRAError("\(path): module '\(name)' is not in \(checkpoint.path) (modules there include: \(known.prefix(8).joined(separator: ", "))…)")
        }
        return target
    }
}

/// Which linear layers an adapter targets, with PEFT's rules: module-name suffixes on a dot boundary
/// (`query`, `self_attn.q_proj`), `all-linear`, or one regular expression matched against the whole
/// module path (PEFT: a string `target_modules` is a regex); optionally only some layer indices.
public struct ModuleTargets: Sendable, Equatable {
    public var names: [String]
    public var regex: String? = nil
    /// Only these layer indices (nil: every layer).
    public var layers: [Int]? = nil

    public init(names: [String], regex: String? = nil, layers: [Int]? = nil) {
        self.names = names; self.regex = regex; self.layers = layers
    }

    /// No modules at all (targets "none": only a head trains — a linear probe).
    public var isEmpty: Bool { names.isEmpty && regex == nil }

    /// `target_modules` as PEFT stores it: the regex string, or the list.
    public var json: JSONValue { regex.map { .string($0) } ?? .array(names.map { .string($0) }) }

    /// Whether `path` is one of `names` by PEFT's rule: equal, or ending in "." + the name.
    public static func matches(_ path: String, _ names: [String]) -> Bool {
        names.contains { path == $0 || path.hasSuffix("." + $0) }
    }

    /// The modules of `available` (module paths of a model's linear layers) targeted, in the model's
    /// order. An entry that matches nothing is an error that lists the model's module names.
    public func select(in available: [String]) throws -> [String] {
        func layerIndex(_ path: String) -> Int? {
            let parts = path.split(separator: ".")
            for (i, p) in parts.enumerated() where (p == "layer" || p == "layers") && i + 1 < parts.count { return Int(parts[i + 1]) }
            return nil
        }
        var chosen: [String] = []
        if let re = regex {
            let regex: NSRegularExpression
            do { regex = try NSRegularExpression(pattern: "^(?:" + re + ")$") } catch { throw LoRAError("target_modules regex '\(re)' is invalid: \(error)") }
            chosen = try Self.matching(regex, re, in: available)
            guard !chosen.isEmpty else { throw LoRAError("target_modules regex '\(re)' matches none of the model's modules (\(Self.distinctNames(available)))") }
        } else if names == ["all-linear"] {
            chosen = available
        } else {
            for t in names {
                let hit = available.filter { Self.matches($0, [t]) }
                guard !hit.isEmpty else {
                    throw LoRAError("target module '\(t)' is not a linear layer of this model; its modules are: \(Self.distinctNames(available))")
                }
                chosen += hit
            }
        }
        if let layers {
            chosen = chosen.filter { layerIndex($0).map(layers.contains) ?? false }
            guard !chosen.isEmpty else { throw LoRAError("layers_to_transform \(layers) leaves no target module") }
        }
        return available.filter(Set(chosen).contains)
    }

    /// Seconds a `target_modules` regex may take to match all of a model's module names: they are a few
    /// hundred short paths, matched in microseconds, unless the pattern backtracks catastrophically
    /// (`(.*.*)*x`), which would hang the run (Python's `re`, which PEFT uses, backtracks the same way).
    static let regexTimeLimit = 2.0

    /// The paths `regex` matches whole, or an error naming the pattern when matching outlasts the time
    /// limit. The matching thread is abandoned: a command then exits with the error; a long-running
    /// process (a server) would keep that thread busy until the pattern finishes.
    static func matching(_ regex: NSRegularExpression, _ pattern: String, in paths: [String]) throws -> [String] {
        final class Result: @unchecked Sendable { var paths: [String] = [] }
        let result = Result(), done = DispatchSemaphore(value: 0)
        Thread {
            result.paths = paths.filter { regex.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) != nil }
            done.signal()
        }.start()
        guard done.wait(timeout: .now() + regexTimeLimit) == .success else {
            throw LoRAError("target_modules regex '\(pattern)' did not finish matching the model's \(paths.count) module names in \(Int(regexTimeLimit)) s: it backtracks catastrophically (nested repetition such as (.*)*); write it without nested quantifiers")
        }
        return result.paths
    }

    /// The per-layer module names (`attention.self.query`, …) without layer indices, for error messages.
    static func distinctNames(_ paths: [String]) -> String {
        var seen: [String] = []
        for p in paths {
            let parts = p.split(separator: ".")
            let tail = parts.firstIndex { Int($0) != nil }.map { parts[($0 + 1)...].joined(separator: ".") } ?? p
            if !seen.contains(tail) { seen.append(tail) }
        }
        return seen.joined(separator: ", ")
    }
}
