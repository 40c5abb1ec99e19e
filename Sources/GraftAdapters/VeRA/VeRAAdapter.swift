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
        let weights = (path as NSString).appendingPathComponent("adapter_model.safetensors")
        guard FileManager.default.fileExists(atPath: weights) else {
            throw FormatError(path, nil, "missing adapter_model.safetensors (adapter_model.bin is not supported)")
        }
        let file = try SafetensorsFile(path: weights)
        var lb: [String: Tensor] = [:], ld: [String: Tensor] = [:], saved: [(String, Tensor)] = []
        var pa: Tensor?, pb: Tensor?
        for info in file.tensors {
            if info.name == "base_model.vera_A" { pa = try file.tensor(info.name); continue }
            if info.name == "base_model.vera_B" { pb = try file.tensor(info.name); continue }
            var name = info.name
            if name.hasPrefix(LoRAAdapter.prefix) { name.removeFirst(LoRAAdapter.prefix.count) }
            if name.hasSuffix(".vera_lambda_b") { lb[String(name.dropLast(".vera_lambda_b".count))] = try file.tensor(info.name) }
            else if name.hasSuffix(".vera_lambda_d") { ld[String(name.dropLast(".vera_lambda_d".count))] = try file.tensor(info.name) }
            else if name.contains(".vera_") { throw FormatError(weights, info.name, "unsupported VeRA tensor") }
            else { saved.append((name.replacingOccurrences(of: ".modules_to_save.default", with: ""), try file.tensor(info.name))) }
        }
        guard let pa, let pb else { throw FormatError(weights, "base_model.vera_A", "the shared projections vera_A and vera_B are missing") }
        guard pa.shape.count == 2, pb.shape.count == 2, pa.shape[0] == pb.shape[1], pa.shape[0] == config.r,
              pa.dtype.isFloatingPoint, pb.dtype.isFloatingPoint else {
            throw FormatError(weights, "base_model.vera_A", "vera_A \(pa.shape) and vera_B \(pb.shape) are not rank-\(config.r) projections")
        }
        var l: [String: (Tensor, Tensor)] = [:]
        for (m, b) in lb {
            guard let d = ld[m] else { throw FormatError(weights, m, "has vera_lambda_b but no vera_lambda_d") }
            guard b.shape.count == 1, b.shape[0] <= pb.shape[0], d.shape == [config.r] else {
                throw FormatError(weights, m, "vera_lambda_b \(b.shape) and vera_lambda_d \(d.shape) do not fit projections \(pa.shape), \(pb.shape)")
            }
            l[m] = (b, d)
        }
        for m in ld.keys where lb[m] == nil { throw FormatError(weights, m, "has vera_lambda_d but no vera_lambda_b") }
        guard !l.isEmpty || !saved.isEmpty else { throw FormatError(weights, nil, "holds no VeRA vectors or saved tensors") }
        a = pa; b = pb; lambdas = l.mapValues { (b: $0.0, d: $0.1) }; savedTensors = saved
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
            let d = u.delta()
            folds[tensorName] = { w in
                let out = FloatBuffer(count: w.count), o = out.mutable, wv = w.values, dv = d.values
                for i in 0..<w.count { o[i] = wv[i] + dv[i] }
                return out
            }
        }
        return folds
    }

    public func recipe(dropout: Double) throws -> any AdapterRecipe {
        var c = VeRAConfig(rank: rank, targets: ModuleTargets(names: config.targetModules))
        if case let .string(re)? = config.json["target_modules"] { c.targets = ModuleTargets(names: [], regex: re) }
        c.projectionSeed = UInt64(config.json["projection_prng_key"]?.intValue ?? 0)
        c.dInitial = config.json["d_initial"]?.doubleValue ?? 0.1
        c.dropout = dropout
        return c
    }

    public var settingsSummary: String { "VeRA r = \(rank) on \(lambdas.count) modules" }
}
