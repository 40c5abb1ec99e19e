import Foundation
import GraftFormats
import GraftTensor
import GraftText

/// A sentence-transformers model: tokenizer + BERT + pooling (mean, CLS or max, from
/// `1_Pooling/config.json`) + L2 normalisation when `modules.json` lists a Normalize module.
public struct SentenceEncoder: Sendable {
    public enum Pooling: String, Sendable { case mean, cls, max }

    public let tokenizer: any Tokenizer
    public private(set) var model: BertModel
    public let pooling: Pooling
    public let normalize: Bool
    /// Longest input in tokens (sentence-transformers' max_seq_length, else the model's positions).
    public let maxLength: Int

    /// `products`: how the float32 products are computed (`F32Matrix.Algorithm`; the default takes
    /// Strassen's algorithm where it pays).
    public init(folder: String, products: F32Matrix.Algorithm = .automatic) throws {
        let ck = try Checkpoint(path: folder)
        model = try BertModel(checkpoint: ck)
        model.packForInference(algorithm: products)
        let tokPath = (folder as NSString).appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: tokPath) else { throw ModelError("\(folder): no tokenizer.json") }
        tokenizer = try TokenizerLoader.load(path: tokPath)
        var pooling = Pooling.mean
        let poolPath = (folder as NSString).appendingPathComponent("1_Pooling/config.json")
        if let d = FileManager.default.contents(atPath: poolPath), let j = try? JSONValue.parse([UInt8](d)) {
            if j["pooling_mode_cls_token"]?.boolValue == true { pooling = .cls }
            else if j["pooling_mode_max_tokens"]?.boolValue == true { pooling = .max }
        }
        self.pooling = pooling
        var norm = false
        if let d = FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent("modules.json")),
           let j = try? JSONValue.parse([UInt8](d)) {
            norm = (j.arrayValue ?? []).contains { $0["type"]?.stringValue?.hasSuffix("Normalize") == true }
        }
        normalize = norm
        var maxLen = model.config.maxPositions
        if let d = FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent("sentence_bert_config.json")),
           let j = try? JSONValue.parse([UInt8](d)), let m = j["max_seq_length"]?.intValue { maxLen = min(maxLen, Int(m)) }
        maxLength = maxLen
    }

    /// Attaches an adapter's updates (by module path) to the encoder's linear layers.
    public mutating func attach(_ updates: [(module: String, update: any LayerUpdate)], source: String) throws {
        try model.attach(updates, source: source)
    }

    /// Attaches an adapter's virtual tokens (a prompt or prefix) and its sublayer updates (bottleneck).
    public mutating func attach(virtualTokens: VirtualTokens?, sublayers: SublayerUpdates, source: String) throws {
        if let virtualTokens { try model.attach(virtualTokens, source: source) }
        for (layer, sites) in sublayers.sites { for (site, u) in sites { try model.attach(u, layer: layer, site: site, source: source) } }
    }

    /// Products with the weights in bf16 (float32 sums): faster on CPUs with AVX512-BF16, embeddings
    /// within ~1e-3 of float32 instead of ~1e-7.
    public mutating func enableBF16() { model.enableBF16() }

    /// Token ids as the model sees them (special tokens added, truncated to `maxLength` keeping the final [SEP]).
    public func tokenize(_ text: String) -> [Int] {
        var ids = tokenizer.encode(text, addSpecialTokens: true)
        if ids.count > maxLength { let last = ids.last!; ids = Array(ids.prefix(maxLength - 1)) + [last] }
        return ids
    }

    /// Token ids of several texts, split over the cores (a batch of 32 short sentences takes ~3.5 ms
    /// on one core, 1.5 % of embedding them).
    func tokenize(_ texts: [String]) -> [[Int]] {
        var ids = [[Int]](repeating: [], count: texts.count)
        ids.withUnsafeMutableBufferPointer { out in
            let o = UncheckedSendable(out)
            parallelFor(count: texts.count, minChunk: 8) { r in for i in r { o.value[i] = tokenize(texts[i]) } }
        }
        return ids
    }

    /// One embedding per text.
    public func embed(_ texts: [String], batchSize: Int = 32) throws -> [[Float]] {
        var out: [[Float]] = []
        var start = 0
        while start < texts.count {
            let chunk = Array(texts[start..<min(texts.count, start + batchSize)])
            let ids = tokenize(chunk)
            let hidden = try model.forward(ids)
            for (i, hbuf) in hidden.enumerated() { out.append(pool(hbuf, length: ids[i].count)) }
            start += batchSize
        }
        return out
    }

    func pool(_ h: FloatBuffer, length: Int) -> [Float] {
        let d = model.config.hidden
        let v = h.values
        var e = [Float](repeating: 0, count: d)
        switch pooling {
        case .cls: for j in 0..<d { e[j] = v[j] }
        case .max:
            e = [Float](repeating: -.infinity, count: d)
            for r in 0..<length { for j in 0..<d { e[j] = Swift.max(e[j], v[r * d + j]) } }
        case .mean:
            for r in 0..<length { for j in 0..<d { e[j] += v[r * d + j] } }
            for j in 0..<d { e[j] /= Float(Swift.max(length, 1)) }
        }
        if normalize {
            let n = Swift.max(e.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            for j in 0..<d { e[j] /= n }
        }
        return e
    }
}
