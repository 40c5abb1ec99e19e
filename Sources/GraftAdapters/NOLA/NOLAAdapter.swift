import Foundation
import GraftFormats
import GraftTensor

/// A NOLA adapter folder as Graft writes it: `adapter_config.json` (`peft_type` "NOLA": r, lora_alpha,
/// bases_A, bases_B, seed) and per module the coefficients `nola_alpha` [k] and `nola_beta` [l]; the bases
/// are regenerated from the seed and the module path when the model's layer shapes are known.
public final class NOLAAdapter: LoadedAdapter, @unchecked Sendable {
    public let path: String
    public let config: PEFTAdapterConfig
    public let recipeConfig: NOLAConfig
    public let coefficients: [String: (alpha: Tensor, beta: Tensor)]
    public let savedTensors: [(String, Tensor)]

    init(path: String, config: PEFTAdapterConfig) throws {
        self.path = path
        self.config = config
        let j = config.json
        guard let ka = j["bases_A"]?.intValue, let kb = j["bases_B"]?.intValue, ka > 0, kb > 0 else {
            throw FormatError(config.path, "bases_A", "missing or not a positive integer (a NOLA adapter records its basis counts)")
        }
        guard let seed = j["seed"]?.intValue, seed >= 0 else { throw FormatError(config.path, "seed", "missing or negative") }
        guard config.r > 0 else { throw FormatError(config.path, "r", "missing or not a positive integer") }
        var c = NOLAConfig(rank: config.r, alpha: config.loraAlpha, bases: Int(ka), targets: ModuleTargets(config: config))
        c.basesB = Int(kb); c.seed = UInt64(seed)
        recipeConfig = c
        let f = try AdapterFile(folder: path, suffixes: ["nola_alpha", "nola_beta"], marker: ".nola_", unsupported: "unsupported NOLA tensor")
        let co = try f.pairs("nola_alpha", "nola_beta")
        for (m, (a, b)) in co {
            guard a.shape == [Int(ka)], b.shape == [Int(kb)], a.dtype.isFloatingPoint, b.dtype.isFloatingPoint else {
                throw FormatError(f.path, m, "nola_alpha \(a.shape) and nola_beta \(b.shape) do not match bases_A \(ka), bases_B \(kb)")
            }
        }
        guard !co.isEmpty || !f.saved.isEmpty else { throw FormatError(f.path, nil, "holds no NOLA coefficients or saved tensors") }
        coefficients = co.mapValues { (alpha: $0.0, beta: $0.1) }
        savedTensors = f.saved
    }

    public var method: String { "nola" }
    public var moduleNames: [String] { coefficients.keys.sorted() }

    /// The bases depend on the layer's shape, which only the model knows: each update regenerates them when attached.
    public func layerUpdates(dropout: Float = 0) -> [(module: String, update: any LayerUpdate)] {
        coefficients.sorted { $0.key < $1.key }.map { name, c in
            (name, NOLAPendingUpdate(config: recipeConfig, alpha: FloatBuffer(FloatBuffer(c.alpha).array),
                                     beta: FloatBuffer(FloatBuffer(c.beta).array), dropout: dropout))
        }
    }

    public func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold] {
        var folds: [String: TensorFold] = [:]
        for (tensorName, module) in try weightTensors(in: checkpoint) {
            let shape = checkpoint.info(tensorName)!.shape, c = coefficients[module]!
            guard shape.count == 2 else { throw LoRAError("\(path): '\(tensorName)' in \(checkpoint.path) is not a matrix") }
            let bases = NOLABases(seed: recipeConfig.seed, module: bareModule(module, in: checkpoint), rank: recipeConfig.rank, inFeatures: shape[1],
                                  outFeatures: shape[0], countA: recipeConfig.basesA, countB: recipeConfig.basesB)
            folds[tensorName] = adding(NOLAUpdate(bases: bases, alpha: FloatBuffer(c.alpha), beta: FloatBuffer(c.beta),
                                                  scale: Float(recipeConfig.scaling)).delta())
        }
        return folds
    }

    /// The module path the bases were keyed by in training (the model's, without a task-model prefix).
    func bareModule(_ module: String, in checkpoint: Checkpoint) -> String {
        let prefix = namePrefix(relativeTo: checkpoint.names)
        return module.hasPrefix(prefix) ? String(module.dropFirst(prefix.count)) : module
    }

    public func recipe(dropout: Double) throws -> any AdapterRecipe {
        var c = recipeConfig
        c.dropout = dropout
        return c
    }

    public var settingsSummary: String { "NOLA r = \(recipeConfig.rank), \(recipeConfig.basesA) + \(recipeConfig.basesB) bases, seed \(recipeConfig.seed)" }
}

/// A loaded NOLA module before it knows its layer: attaching it (`fit`) regenerates the bases for that
/// shape, then it is a `NOLAUpdate`.
final class NOLAPendingUpdate: LayerUpdate, @unchecked Sendable {
    let config: NOLAConfig, alpha: FloatBuffer, beta: FloatBuffer, dropout: Float
    private var update: NOLAUpdate?

    init(config: NOLAConfig, alpha: FloatBuffer, beta: FloatBuffer, dropout: Float) {
        self.config = config; self.alpha = alpha; self.beta = beta; self.dropout = dropout
    }

    var method: String { "nola" }
    var ready: NOLAUpdate { update! }

    func fit(module: String, inFeatures: Int, outFeatures: Int) -> String? {
        // Keyed by the layer's path in the model, as in training (the adapter's names may carry a task-model prefix).
        let bases = NOLABases(seed: config.seed, module: module, rank: config.rank, inFeatures: inFeatures, outFeatures: outFeatures,
                              countA: config.basesA, countB: config.basesB)
        update = NOLAUpdate(bases: bases, alpha: alpha, beta: beta, scale: Float(config.scaling), dropout: dropout)
        return nil
    }

    var parameters: [UpdateParameter] { update?.parameters ?? [] }
    func makeTrainable() { update?.makeTrainable() }
    func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        ready.forward(x, rows: rows, base: base, rng: rng)
    }
    func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        ready.backward(dy, x: x, saved: saved, rows: rows, base: base, needInput: needInput)
    }
}
