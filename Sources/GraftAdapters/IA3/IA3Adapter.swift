import Foundation
import GraftFormats
import GraftTensor

/// An HF PEFT (IA)³ adapter folder: one vector `ia3_l` per target module ([1, in] on feed-forward
/// modules, [out, 1] on the others, as `feedforward_modules` says), plus `modules_to_save` tensors.
public final class IA3Adapter: LoadedAdapter, @unchecked Sendable {
    public let path: String
    public let config: PEFTAdapterConfig
    public let recipeConfig: IA3Config
    /// l per module path (without `base_model.model.`), and whether the module is feed-forward.
    public let vectors: [String: (scaling: Tensor, feedforward: Bool)]
    public let savedTensors: [(String, Tensor)]

    init(path: String, config: PEFTAdapterConfig) throws {
        self.path = path
        self.config = config
        let json = config.json
        let ff = json["feedforward_modules"]
        if case .string? = ff {
            throw FormatError(config.path, "feedforward_modules", "a regular expression here is not supported yet (give a list)")
        }
        recipeConfig = IA3Config(targets: ModuleTargets(config: config), feedforward: PEFTAdapterConfig.modules(ff))
        let f = try AdapterFile(folder: path, suffixes: ["ia3_l"], marker: ".ia3_", unsupported: "unsupported IA³ tensor")
        var vectors: [String: (scaling: Tensor, feedforward: Bool)] = [:]
        for (module, t) in f["ia3_l"] {
            let feedforward = recipeConfig.isFeedforward(module)
            guard t.dtype.isFloatingPoint, t.shape.count == 2, feedforward ? t.shape[0] == 1 : t.shape[1] == 1 else {
                throw FormatError(f.path, module + ".ia3_l", "shape \(t.shape) is not a \(feedforward ? "[1, in] feed-forward" : "[out, 1]") IA³ vector (feedforward_modules: \(recipeConfig.feedforward))")
            }
            vectors[module] = (t, feedforward)
        }
        guard !vectors.isEmpty || !f.saved.isEmpty else { throw FormatError(f.path, nil, "holds no IA³ vectors or saved tensors") }
        self.vectors = vectors
        savedTensors = f.saved
    }

    public var method: String { "ia3" }
    public var moduleNames: [String] { vectors.keys.sorted() }

    public func layerUpdates(dropout: Float = 0) -> [(module: String, update: any LayerUpdate)] {
        vectors.sorted { $0.key < $1.key }.map { name, v in
            (name, IA3Update(scaling: FloatBuffer(FloatBuffer(v.scaling).array), feedforward: v.feedforward))
        }
    }

    /// As PEFT's merge: W's columns scaled on feed-forward modules, else its rows and the bias.
    public func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold] {
        var folds: [String: TensorFold] = [:]
        for (tensorName, module) in try weightTensors(in: checkpoint) {
            let v = vectors[module]!, l = FloatBuffer(v.scaling), shape = checkpoint.info(tensorName)!.shape
            guard shape.count == 2, l.count == (v.feedforward ? shape[1] : shape[0]) else {
                throw LoRAError("\(path): module '\(module)' scales \(l.count) \(v.feedforward ? "inputs" : "outputs") but \(checkpoint.path) has '\(tensorName)' of shape \(shape) (adapter for a different base?)")
            }
            let cols = shape[1], ff = v.feedforward
            folds[tensorName] = { w in
                let out = FloatBuffer(count: w.count), o = out.mutable, wv = w.values, lv = l.values
                for i in 0..<w.count { o[i] = wv[i] * lv[ff ? i % cols : i / cols] }
                return out
            }
            let bias = String(tensorName.dropLast(".weight".count)) + ".bias"
            if !ff, checkpoint.info(bias) != nil {
                folds[bias] = { b in FloatBuffer((0..<b.count).map { b[$0] * l[$0] }) }
            }
        }
        return folds
    }

    public func recipe(dropout: Double) throws -> any AdapterRecipe { recipeConfig }

    public var settingsSummary: String {
        "IA³ on \(vectors.count) modules (feed-forward: \(recipeConfig.feedforward.joined(separator: ", ")))"
    }
}
