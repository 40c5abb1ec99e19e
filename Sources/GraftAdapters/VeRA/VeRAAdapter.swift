import Foundation
import GraftFormats
import GraftTensor

/// An HF PEFT VeRA adapter folder: the shared projections `base_model.vera_A` [r × in_max] and
/// `base_model.vera_B` [out_max × r] (saved with `save_projection`, PEFT's default), and per module
/// `vera_lambda_b` [out] and `vera_lambda_d` [r].
public final class VeRAAdapter: LoadedAdapter, @unchecked Sendable {
    public let path: String
    public let config: PEFTAdapterConfig
    public let a: Tensor, b: Tensor
    public let lambdas: [String: (b: Tensor, d: Tensor)]
    public let savedTensors: [(String, Tensor)]

    init(path: String, config: PEFTAdapterConfig) throws {
        self.path = path
        self.config = config
        if config.json["save_projection"]?.boolValue == false {
            throw FormatError(config.path, "save_projection", "false: the projections would have to be redrawn with PyTorch's generator; save them (PEFT's default)")
        }
        guard config.r > 0 else { throw FormatError(config.path, "r", "missing or not a positive integer") }
        let f = try AdapterFile(folder: path, suffixes: ["vera_lambda_b", "vera_lambda_d"], marker: ".vera_",
                                exactNames: ["base_model.vera_A", "base_model.vera_B"], unsupported: "unsupported VeRA tensor")
        let weights = f.path
        guard let pa = f.exact["base_model.vera_A"], let pb = f.exact["base_model.vera_B"] else {
            throw FormatError(weights, "base_model.vera_A", "the shared projections vera_A and vera_B are missing")
        }
        guard pa.shape.count == 2, pb.shape.count == 2, pa.shape[0] == pb.shape[1], pa.shape[0] == config.r,
              pa.dtype.isFloatingPoint, pb.dtype.isFloatingPoint else {
            throw FormatError(weights, "base_model.vera_A", "vera_A \(pa.shape) and vera_B \(pb.shape) are not rank-\(config.r) projections")
        }
        let l = try f.pairs("vera_lambda_b", "vera_lambda_d")
        for (m, (b, d)) in l {
            guard b.shape.count == 1, b.shape[0] <= pb.shape[0], d.shape == [config.r] else {
                throw FormatError(weights, m, "vera_lambda_b \(b.shape) and vera_lambda_d \(d.shape) do not fit projections \(pa.shape), \(pb.shape)")
            }
        }
        guard !l.isEmpty || !f.saved.isEmpty else { throw FormatError(weights, nil, "holds no VeRA vectors or saved tensors") }
        a = pa; b = pb; lambdas = l.mapValues { (b: $0.0, d: $0.1) }; savedTensors = f.saved
    }

    public var method: String { "vera" }
    public var moduleNames: [String] { lambdas.keys.sorted() }
    var rank: Int { a.shape[0] }

    public var sharedTensors: [SharedTensor] {
        [SharedTensor(name: "base_model.vera_A", value: FloatBuffer(a), shape: a.shape),
         SharedTensor(name: "base_model.vera_B", value: FloatBuffer(b), shape: b.shape)]
    }

    /// Every module's update over one copy of the projections; each takes its input width when attached.
    public func layerUpdates(dropout: Float = 0) -> [(module: String, update: any LayerUpdate)] {
        let pa = FloatBuffer(FloatBuffer(a).array), pb = FloatBuffer(FloatBuffer(b).array)
        return lambdas.sorted { $0.key < $1.key }.map { name, l in
            (name, VeRAUpdate(sharedA: pa, sharedB: pb, rank: rank, outFeatures: l.b.shape[0],
                              lambdaB: FloatBuffer(FloatBuffer(l.b).array), lambdaD: FloatBuffer(FloatBuffer(l.d).array), dropout: dropout))
        }
    }

    /// W + ΔW, ΔW = (λ_b ⊙ B[:out])·(λ_d ⊙ A[:, :in]) with in and out from the checkpoint's weight.
    public func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold] {
        var folds: [String: TensorFold] = [:]
        let pa = FloatBuffer(a), pb = FloatBuffer(b)
        for (tensorName, module) in try weightTensors(in: checkpoint) {
            let shape = checkpoint.info(tensorName)!.shape, l = lambdas[module]!
            guard shape.count == 2, shape[0] == l.b.shape[0], shape[1] <= a.shape[1] else {
                throw LoRAError("\(path): module '\(module)' gives a [\(l.b.shape[0]), ≤ \(a.shape[1])] update but \(checkpoint.path) has '\(tensorName)' of shape \(shape) (adapter for a different base?)")
            }
            let u = VeRAUpdate(sharedA: pa, sharedB: pb, rank: rank, inFeatures: shape[1], outFeatures: shape[0],
                               lambdaB: FloatBuffer(l.b), lambdaD: FloatBuffer(l.d))
            folds[tensorName] = adding(u.delta())
        }
        return folds
    }

    public func recipe(dropout: Double) throws -> any AdapterRecipe {
        var c = VeRAConfig(rank: rank, targets: ModuleTargets(config: config))
        c.projectionSeed = UInt64(config.json["projection_prng_key"]?.intValue ?? 0)
        c.dInitial = config.json["d_initial"]?.doubleValue ?? 0.1
        c.dropout = dropout
        return c
    }

    public var settingsSummary: String { "VeRA r = \(rank) on \(lambdas.count) modules" }
}
