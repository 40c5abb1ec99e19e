import Foundation
import GraftFormats
import GraftTensor

/// LoRA whose A and B start from components of the weight (CorDA, PiSSA-style initialisations): PEFT
/// replaces the base weight by the residual W − s·B₀·A₀ so that the model starts unchanged; here the
/// base weight stays and the update carries the residual instead, y = x·Wᵀ + b − s·(x·A₀ᵀ)·B₀ᵀ +
/// s·(x̃·Aᵀ)·Bᵀ — the same function and gradients, and the saved adapter can be a plain LoRA of the
/// original base ([A; A₀], [B, −B₀] at rank 2r, PEFT's `path_initial_model_for_weight_conversion`).
public final class ResidualLoRAUpdate: LayerUpdate, @unchecked Sendable {
    public let lora: LoRAUpdate
    /// The frozen initial A₀ [rank × in] and B₀ [out × rank].
    public let a0: FloatBuffer, b0: FloatBuffer

    public init(lora: LoRAUpdate, a0: FloatBuffer, b0: FloatBuffer) { self.lora = lora; self.a0 = a0; self.b0 = b0 }

    public var method: String { "corda" }
    public func fit(module: String, inFeatures: Int, outFeatures: Int) -> String? { lora.fit(module: module, inFeatures: inFeatures, outFeatures: outFeatures) }
    public var parameters: [UpdateParameter] { lora.parameters }
    public func makeTrainable() { lora.makeTrainable() }

    /// The frozen layer minus s·B₀·A₀, as the LoRA update's base.
    func residual(_ base: FrozenLinear) -> FrozenLinear {
        let (r, inF, outF, s) = (lora.rank, lora.inFeatures, lora.outFeatures, lora.scale)
        let a0 = a0, b0 = b0
        return FrozenLinear(weight: base.weight, bias: base.bias, inFeatures: inF, outFeatures: outF,
                            product: { x, rows in
                                let y = base.forward(x, rows: rows)
                                let t = LowRankBranch.down(x, rows: rows, a: a0, rank: r, inFeatures: inF)
                                LowRankBranch.up(t, rows: rows, b: b0, rank: r, outFeatures: outF, scale: -s, into: y.mutable.baseAddress!)
                                return y
                            },
                            inputProduct: { dy, rows in
                                let dx = base.inputGradient(dy, rows: rows)
                                let u = FloatBuffer(count: rows * r)
                                Linalg.gemm(m: rows, n: r, k: outF, a: dy.values.baseAddress!, b: b0.values.baseAddress!, c: u.mutable.baseAddress!)
                                withExtendedLifetime(u) {
                                    Linalg.gemm(m: rows, n: inF, k: r, alpha: -s, a: u.values.baseAddress!, b: a0.values.baseAddress!, beta: 1,
                                                c: dx.mutable.baseAddress!)
                                }
                                return dx
                            })
    }

    public func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?) {
        lora.forward(x, rows: rows, base: residual(base), rng: rng)
    }

    public func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer? {
        lora.backward(dy, x: x, saved: saved, rows: rows, base: residual(base), needInput: needInput)
    }
}

/// How to build a new CorDA adapter (Yang et al. 2024; PEFT's LoRA with `init_lora_weights="corda"`):
/// LoRA r, alpha and dropout as LoRA's; A and B start from the decomposition of each weight against the
/// covariance of its inputs on the first `calibrationExamples` training examples — the largest
/// components (`ipm`, instruction-previewed: start from what the task uses most) or the smallest
/// (`kpm`, knowledge-preserved: adapt where the task's inputs leave the weight alone).
public struct CorDAConfig: AdapterRecipe {
    public var lora: LoRAConfig
    public var mode = CorDADecomposition.Mode.ipm
    public var calibrationExamples = 256
    /// Each targeted module's input covariance, from `calibrated` (the run's calibration pass).
    public var covariances: [String: [Double]] = [:]

    public init(lora: LoRAConfig) { self.lora = lora }

    public var targets: ModuleTargets { lora.targets }
    public var method: String { "corda" }
    public var label: String { "CorDA (\(mode.rawValue)) r=\(lora.rank)" }
    public var dropout: Double { lora.dropout }
    public var calibrationCount: Int { calibrationExamples }

    static let info = AdapterMethodInfo(
        name: "corda", summary: "LoRA started from the weight's components against the covariance of its task inputs (Yang et al. 2024); PEFT's init_lora_weights=\"corda\"",
        peftType: "LORA", fusable: true,
        options: LoRAConfig.options.filter { $0.name != "rslora" } + [
            ("corda-mode", "ipm: the largest components, instruction-previewed; kpm: the smallest, knowledge-preserved (default ipm)"),
            ("calibration-examples", "training examples whose inputs give the covariance (default 256)")],
        recipe: { s in
            guard let c = try LoRAConfig.recipe(s, dora: false) as? LoRAConfig else { throw LoRAError("CorDA is built on LoRA") }
            var corda = CorDAConfig(lora: c)
            if let m = s.values["corda-mode"] {
                guard let v = CorDADecomposition.Mode(rawValue: m) else { throw LoRAError("--corda-mode: '\(m)' is not ipm or kpm") }
                corda.mode = v
            }
            corda.calibrationExamples = try s.int("calibration-examples") ?? corda.calibrationExamples
            return corda
        })

    public func validate() throws {
        try lora.validate()
        guard calibrationExamples > 0 else { throw LoRAError("CorDA needs at least one calibration example (--calibration-examples \(calibrationExamples))") }
    }

    public func calibrated(_ statistics: [String: [Double]]) -> any AdapterRecipe {
        var c = self
        c.covariances = statistics
        return c
    }

    /// PEFT's CorDA initialisation of each module from its covariance.
    public func makeUpdate(module: String, weight: FloatBuffer, inFeatures: Int, outFeatures: Int, seed: UInt64) throws -> any LayerUpdate {
        guard let c = covariances[module] else {
            throw LoRAError("CorDA: no input covariance for '\(module)' (the calibration pass did not reach it)")
        }
        let d = try CorDADecomposition.decompose(weight: weight, outFeatures: outFeatures, inFeatures: inFeatures, covariance: c,
                                                 rank: lora.rank, scaling: lora.scaling, mode: mode)
        let update = LoRAUpdate(a: FloatBuffer(d.a), b: FloatBuffer(d.b), rank: lora.rank, scale: Float(lora.scaling), dropout: Float(lora.dropout))
        return ResidualLoRAUpdate(lora: update, a0: FloatBuffer(d.a), b0: FloatBuffer(d.b))
    }

    public func makeTrainingHook(modules: [TrainedModule], totalSteps: Int, seed: UInt64) throws -> (any AdapterTrainingHook)? {
        CorDAConversion(modules: try modules.map { m in
            guard let u = m.update as? ResidualLoRAUpdate else { throw LoRAError("module '\(m.path)' is not a CorDA update (\(m.update.method))") }
            return (m.path, u)
        })
    }

    /// LoRA's config, with the settings of the initialisation recorded (`graft_method`, `graft_settings`).
    public func peftConfig(taskType: String, baseModel: String, modulesToSave: [String]) -> JSONValue {
        return lora.peftConfig(taskType: taskType, baseModel: baseModel, modulesToSave: modulesToSave).setting("graft_method", .string(method))
            .setting("graft_settings", .object([("corda_method", .string(mode.rawValue)), ("calibration_examples", .int(Int64(calibrationExamples)))]))
    }
}

/// Saves a trained CorDA adapter as a plain LoRA of the original base (PEFT's conversion for
/// initialisations that change the base): A' = [A; A₀], B' = [B, −B₀], r' = 2r, lora_alpha' = 2α, so
/// s·B'·A' = s·(B·A − B₀·A₀), the whole change from the original weights. Checkpoints keep A and B
/// alone (a resumed run recomputes A₀ and B₀ from the same calibration).
final class CorDAConversion: AdapterTrainingHook {
    let modules: [(path: String, update: ResidualLoRAUpdate)]
    init(modules: [(path: String, update: ResidualLoRAUpdate)]) { self.modules = modules }

    func savedAdapter(config json: JSONValue, tensors: [(String, Tensor)], final: Bool) throws -> (config: JSONValue, tensors: [(String, Tensor)]) {
        guard final else { return (json, tensors) }
        var config = json
        if let r = json["r"]?.intValue { config = config.setting("r", .int(2 * r)) }
        if let a = json["lora_alpha"]?.doubleValue { config = config.setting("lora_alpha", a == a.rounded() ? .int(Int64(2 * a)) : .double(2 * a)) }
        var out = tensors
        for m in modules {
            let u = m.update.lora, r = u.rank, inF = u.inFeatures, outF = u.outFeatures
            for (i, (name, t)) in out.enumerated() {
                if name.hasSuffix("." + m.path + ".lora_A.weight") {
                    out[i].1 = FloatBuffer(FloatBuffer(t).array + m.update.a0.array).tensor(shape: [2 * r, inF])
                } else if name.hasSuffix("." + m.path + ".lora_B.weight") {
                    let b = FloatBuffer(t).array, b0 = m.update.b0.array
                    out[i].1 = FloatBuffer((0..<outF).flatMap { o in (0..<r).map { b[o * r + $0] } + (0..<r).map { -b0[o * r + $0] } })
                        .tensor(shape: [outF, 2 * r])
                }
            }
        }
        return (config, out)
    }
}
