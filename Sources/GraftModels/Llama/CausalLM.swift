import Foundation
import GraftFormats
import GraftTensor
import GraftText

/// A causal language model ready to run: the Llama decoder with its tokenizer and chat template.
public struct CausalLM: Sendable {
    public var model: LlamaModel
    public let tokenizer: ByteLevelBPETokenizer
    public let chatTemplate: ChatTemplate?

    /// Loads a GGUF file (weights dequantised to float32; tokenizer and chat template from its metadata).
    public init(gguf path: String) throws {
        let g = try GGUFFile(path: path)
        model = try LlamaModel(gguf: g)
        tokenizer = try ByteLevelBPETokenizer.fromGGUF(g)
        chatTemplate = try g["tokenizer.chat_template"]?.string.map { try ChatTemplate(template: $0) }
    }

    public var eosId: Int? { tokenizer.eosId }
}
