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
        try logits(ids: texts.map { tokenizer.encode($0, addSpecialTokens: true) })
    }

    /// Logits for token-id sequences (special tokens included), through the inference path.
    public func logits(ids: [[Int]]) throws -> [[Float]] {
        if encoder.virtualTokens != nil {  // the pooler reads the first position, a virtual token's
            let f = try features(ids), n = head.outFeatures
            let l = head.forward(f, rows: ids.count)
            return (0..<ids.count).map { Array(l.values[($0 * n)..<(($0 + 1) * n)]) }
        }
        return try encoder.forward(ids).map { h in head.forward(try encoder.pooledOutput(h), rows: 1).array }
    }
}

extension BertForSequenceClassification {
    /// The head's inputs tanh(pooler(h[CLS])) for a batch [batch × hidden], as in evaluation (no dropout).
    public func features(_ ids: [[Int]]) throws -> FloatBuffer {
        try encoder.pool(try encoder.forwardTraining(ids, rng: nil, firstTokenOnly: true).hidden, rows: ids.count)
    }
}
