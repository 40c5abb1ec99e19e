import Foundation
import GraftFormats

/// The SentencePiece-style BPE vocabulary llama.cpp calls "llama" (`tokenizer.ggml.model` = llama):
/// spaces become "▁" (with one prepended when `add_space_prefix`), characters are merged pairwise,
/// highest piece score first (leftmost on ties), as long as the merged piece is in the vocabulary;
/// a character left without a piece falls back to its UTF-8 bytes (`<0xXX>` tokens).
/// Follows llama.cpp's `llm_tokenizer_spm`.
public final class SentencePieceBPETokenizer: Tokenizer, @unchecked Sendable {
    public let tokens: [String]
    let scores: [Float]
    let vocab: [String: Int]
    let byteIds: [Int?]
    let unkId: Int?
    public let bosId: Int?
    public let eosId: Int?
    let addBOS: Bool
    let addSpacePrefix: Bool
    let control: Set<Int>
    let added: AddedTokenSplitter

    public var vocabularySize: Int { tokens.count }
    public func id(of token: String) -> Int? { vocab[token] }
    public func token(of id: Int) -> String? { id >= 0 && id < tokens.count ? tokens[id] : nil }

    public init(gguf g: GGUFFile) throws {
        let tokens = try g.strings("tokenizer.ggml.tokens")
        self.tokens = tokens
        guard let sc = g["tokenizer.ggml.scores"]?.array, sc.count == tokens.count else {
            throw TokenizerError(g.path, "tokenizer.ggml.scores: missing or not one score per token")
        }
        scores = sc.map { Float($0.double ?? 0) }
        let types = g["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? [Int](repeating: 1, count: tokens.count)
        var v: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where v[t] == nil { v[t] = i }
        vocab = v
        var bytes = [Int?](repeating: nil, count: 256)
        for (i, t) in tokens.enumerated() where i < types.count && types[i] == 6 {
            if t.hasPrefix("<0x"), t.hasSuffix(">"), let b = UInt8(t.dropFirst(3).dropLast(), radix: 16) { bytes[Int(b)] = i }
        }
        byteIds = bytes
        unkId = g["tokenizer.ggml.unknown_token_id"]?.int
        bosId = g["tokenizer.ggml.bos_token_id"]?.int
        eosId = g["tokenizer.ggml.eos_token_id"]?.int
        addBOS = g["tokenizer.ggml.add_bos_token"]?.bool ?? true
        addSpacePrefix = g["tokenizer.ggml.add_space_prefix"]?.bool ?? true
        let ctrl = types.enumerated().filter { $0.element == 3 || $0.element == 4 }.map(\.offset)
        control = Set(ctrl)
        added = AddedTokenSplitter(ctrl.filter { types[$0] == 4 }.map { (tokens[$0], $0) })
    }

    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        if addSpecialTokens && addBOS, let b = bosId { ids.append(b) }
        for (k, seg) in added.split(text).enumerated() {
            if let id = seg.id { ids.append(id); continue }
            var s = seg.text
            if addSpacePrefix && k == 0 { s = " " + s }
            ids += spm(s.replacingOccurrences(of: " ", with: "\u{2581}"))
        }
        return ids
    }

    func spm(_ text: String) -> [Int] {
        let symbols = Self.merge(text.map(String.init), vocab: vocab, scores: scores)
        var ids: [Int] = []
        for s in symbols {
            if let id = vocab[s] { ids.append(id); continue }
            for byte in s.utf8 {
                if let id = byteIds[Int(byte)] { ids.append(id) } else if let u = unkId { ids.append(u) }
            }
        }
        return ids
    }

    /// Joins the neighbours whose concatenation is in the vocabulary, highest score first and the leftmost
    /// on ties (llama.cpp's SentencePiece tokenizer).
    static func merge(_ start: [String], vocab: [String: Int], scores: [Float]) -> [String] {
        // Key: the merged token's id; higher score first.
        var q = MergeQueue<Int>(start) { a, b in scores[a] == scores[b] ? nil : scores[a] > scores[b] }
        func offer(_ l: Int) {
            if let r = q.right(of: l), let id = vocab[q.symbols[l] + q.symbols[r]] { q.push(id, left: l) }
        }
        for i in start.indices { offer(i) }
        while let c = q.pop() {
            guard q.isAlive(c.left), let r = q.right(of: c.left), vocab[q.symbols[c.left] + q.symbols[r]] == c.key else { continue }
            q.merge(c.left)
            if let l = q.left(of: c.left) { offer(l) }
            offer(c.left)
        }
        return q.result
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && id < tokens.count {
            if control.contains(id) || id == bosId || id == eosId {
                if !skipSpecialTokens { bytes += Array(tokens[id].utf8) }
                continue
            }
            if let b = byteIds.firstIndex(where: { $0 == id }) { bytes.append(UInt8(b)); continue }
            bytes += Array(tokens[id].replacingOccurrences(of: "\u{2581}", with: " ").utf8)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
