import Foundation
import GraftFormats
import GraftTensor
import GraftText

/// A causal language model ready to run: the Llama decoder with its tokenizer and chat template.
public struct CausalLM: Sendable {
    public var model: LlamaModel
    public let tokenizer: ByteLevelBPETokenizer
    /// The model's own (or, with `--chat-template`, the one chosen instead).
    public var chatTemplate: ChatTemplate?

    /// Loads a GGUF file (weights dequantised to float32; tokenizer and chat template from its metadata).
    public init(gguf path: String) throws {
        let g = try GGUFFile(path: path)
        model = try LlamaModel(gguf: g)
        tokenizer = try ByteLevelBPETokenizer.fromGGUF(g)
        var special: [String: String] = [:]
        for (key, name) in [("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")] {
            if let id = g["tokenizer.ggml.\(key)_token_id"]?.int, let t = tokenizer.token(of: Int(id)) { special[name] = t }
        }
        chatTemplate = try g["tokenizer.chat_template"]?.string.map { try ChatTemplate(template: $0, specialTokens: special) }
    }

    /// Loads an HF folder: `LlamaForCausalLM` safetensors, `tokenizer.json` (byte-level BPE) and the chat
    /// template of `tokenizer_config.json`.
    public init(folder: String) throws {
        model = try LlamaModel(checkpoint: try Checkpoint(path: folder))
        let tokPath = (folder as NSString).appendingPathComponent("tokenizer.json")
        guard let t = try TokenizerLoader.load(path: tokPath) as? ByteLevelBPETokenizer else {
            throw ModelError("\(tokPath): a causal LM needs a byte-level BPE tokenizer")
        }
        tokenizer = t
        var template: ChatTemplate? = nil
        if let d = FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent("tokenizer_config.json")),
           let j = try? JSONValue.parse([UInt8](d)), let tt = j["chat_template"]?.stringValue {
            template = try ChatTemplate(template: tt, specialTokens: chatTemplateSpecialTokens(tokenizerConfig: j))
        }
        chatTemplate = template
    }

    /// A `.gguf` file or an HF folder.
    public init(path: String) throws {
        if path.hasSuffix(".gguf") { try self.init(gguf: path) } else { try self.init(folder: path) }
    }

    public var eosId: Int? { tokenizer.eosId }
}
