import Foundation
import GraftFormats
import GraftTensor

/// An EPT folder as `EPTConfig` writes it: `adapter_config.json` with `peft_type` "EPT" (r, lora_alpha,
/// num_spaces, embedding_positions, num_virtual_tokens, token_dim) and the seven tensors of `EPTPrompt`
/// under their `ept.` names, plus a saved head. Its prompt is computed from them when loaded; it is
/// not a weight change, so it cannot be folded.
public final class EPTAdapter: LoadedAdapter, @unchecked Sendable {
    public let path: String
    public let config: PEFTAdapterConfig
    public let savedTensors: [(String, Tensor)]
    let settings: EPTConfig
    let tensors: [FloatBuffer]
    let width: Int

    init(path: String, config: PEFTAdapterConfig) throws {
        self.path = path; self.config = config
        let j = config.json
        func positive(_ key: String) throws -> Int {
            guard let v = j[key]?.intValue, v > 0 else { throw FormatError(config.path, key, "missing or not a positive integer") }
            return Int(v)
        }
        var c = EPTConfig()
        c.virtualTokens = try positive("num_virtual_tokens"); c.rank = try positive("r"); c.spaces = try positive("num_spaces")
        c.embeddingPositions = try positive("embedding_positions")
        c.alpha = config.loraAlpha
        c.initialisation = PromptTuningConfig.Initialisation(rawValue: j["prompt_tuning_init"]?.stringValue ?? "RANDOM") ?? .random
        c.initText = j["prompt_tuning_init_text"]?.stringValue
        settings = c
        let d = try positive("token_dim")
        width = d
        let names = EPTPrompt.names(m: c.virtualTokens, d: d, r: c.rank, positions: c.embeddingPositions, spaces: c.spaces)
        let f = try AdapterFile(folder: path, suffixes: [], marker: "ept.", exactNames: names.map(\.0), unsupported: "unsupported EPT tensor")
        tensors = try names.map { name, shape in
            guard let t = f.exact[name] else { throw FormatError(f.path, name, "missing (an EPT adapter has \(names.map(\.0).joined(separator: ", ")))") }
            guard t.dtype.isFloatingPoint, t.shape == shape else {
                throw FormatError(f.path, name, "\(t.dtype.rawValue) \(t.shape) does not fit the config, which needs float \(shape)")
            }
            return FloatBuffer(FloatBuffer(t).array)
        }
        savedTensors = f.saved
    }

    public var method: String { "ept" }
    public var moduleNames: [String] { [] }
    public func layerUpdates(dropout: Float) -> [(module: String, update: any LayerUpdate)] { [] }

    public func virtualTokens() throws -> VirtualTokens? {
        let t = tensors.map { FloatBuffer($0.array) }  // each load its own copy, as the other readers
        return EPTPrompt(prompt: t[0], a: t[1], b: t[2], down: t[3], up: t[4], gateWeight: t[5], gateBias: t[6], width: width,
                         rank: settings.rank, spaces: settings.spaces, scale: Float(settings.alpha / Double(settings.rank).squareRoot())).makeTokens()
    }

    public func folds(in checkpoint: Checkpoint) throws -> [String: TensorFold] {
        throw LoRAError("\(path): EPT cannot be folded into the weights: its prompt is \(settings.virtualTokens) extra inputs and its embedding update is added to the tokens' inputs by position, not a change to any weight (serve it on the base model with the adapter instead)")
    }

    public func recipe(dropout: Double) throws -> any AdapterRecipe { settings }

    public var settingsSummary: String { settings.label }
}
