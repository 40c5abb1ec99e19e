import GraftTensor
import GraftText

/// BERT + pooler + a linear classification head, as transformers' `BertForSequenceClassification`:
/// logits = W · tanh(pooler(h[CLS])) + b.
public struct BertForSequenceClassification: Sendable {
    public var encoder: BertModel
    public let tokenizer: any Tokenizer
    public var head: Linear

    public init(encoder: BertModel, tokenizer: any Tokenizer, head: Linear) throws {
        guard head.inFeatures == encoder.config.hidden else {
            throw ModelError("classifier takes \(head.inFeatures) features but the encoder's hidden size is \(encoder.config.hidden)")
        }
        self.encoder = encoder; self.tokenizer = tokenizer; self.head = head
    }

    public func logits(_ texts: [String]) throws -> [[Float]] {
        let ids = texts.map { tokenizer.encode($0, addSpecialTokens: true) }
        return try encoder.forward(ids).map { h in head.forward(try encoder.pooledOutput(h), rows: 1).array }
    }
}

extension BertForSequenceClassification {
    /// The head's inputs tanh(pooler(h[CLS])) for a batch [batch × hidden], as in evaluation (no dropout).
    public func features(_ ids: [[Int]]) throws -> FloatBuffer {
        try encoder.pool(try encoder.forwardTraining(ids, rng: nil, firstTokenOnly: true).hidden, rows: ids.count)
    }
}
