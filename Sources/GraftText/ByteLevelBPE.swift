import Foundation
import GraftFormats

/// GPT-2 style byte-level BPE: text is split by the pre-tokenizer (optionally digits one by one, then
/// the GPT-2 pattern), each piece's UTF-8 bytes are mapped to printable characters, and merges are
/// applied lowest rank first. Control / user-defined tokens (e.g. `<|im_start|>`) are matched whole.
public final class ByteLevelBPETokenizer: Tokenizer, @unchecked Sendable {
    public let tokens: [String]
    let vocab: [String: Int]
    let ranks: [Pair: Int]
    let special: Set<Int>
    let added: AddedTokenSplitter
    /// Split every digit into its own piece before the GPT-2 pattern (SmolLM2's `Digits(individual_digits)`).
    let splitDigits: Bool
    public let bosId: Int?
    public let eosId: Int?
    let addBOS: Bool
    private var cache: [String: [Int]] = [:]
    private let lock = NSLock()

    struct Pair: Hashable { let a: String; let b: String }

    public var vocabularySize: Int { tokens.count }
    public func id(of token: String) -> Int? { vocab[token] }
    public func token(of id: Int) -> String? { id >= 0 && id < tokens.count ? tokens[id] : nil }

    /// - Parameters:
    ///   - specialTokens: tokens matched whole in the input (control and added tokens).
    ///   - specialIds: the ones dropped by `decode(skipSpecialTokens:)` (default: all of `specialTokens`).
    public init(tokens: [String], merges: [String], specialTokens: [Int], splitDigits: Bool,
                bosId: Int?, eosId: Int?, addBOS: Bool, source: String, specialIds: [Int]? = nil) throws {
        self.tokens = tokens
        var v: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where v[t] == nil { v[t] = i }
        vocab = v
        var r: [Pair: Int] = [:]
        for (i, m) in merges.enumerated() {
            let parts = m.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw TokenizerError(source, "merge \(i) '\(m)' is not two symbols separated by a space") }
            r[Pair(a: String(parts[0]), b: String(parts[1]))] = i
        }
        ranks = r
        special = Set(specialIds ?? specialTokens)
        added = AddedTokenSplitter(specialTokens.compactMap { $0 < tokens.count ? (tokens[$0], $0) : nil })
        self.splitDigits = splitDigits
        self.bosId = bosId; self.eosId = eosId; self.addBOS = addBOS
    }

    /// The tokenizer stored in a GGUF file (`tokenizer.ggml.model` = gpt2).
    public static func fromGGUF(_ g: GGUFFile) throws -> ByteLevelBPETokenizer {
        let model = g["tokenizer.ggml.model"]?.string
        guard model == "gpt2" else {
            throw TokenizerError(g.path, "tokenizer.ggml.model '\(model ?? "missing")' is not a byte-level BPE vocabulary (gpt2); 'llama' vocabularies load as SentencePieceBPETokenizer")
        }
        let tokens = try g.strings("tokenizer.ggml.tokens")
        let merges = try g.strings("tokenizer.ggml.merges")
        let types = g["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        // 3 = control, 4 = user-defined: matched whole in the input.
        let specials = types.enumerated().filter { $0.element == 3 || $0.element == 4 }.map(\.offset)
        let pre = g["tokenizer.ggml.pre"]?.string ?? "default"
        let known = ["default", "gpt2", "smollm", "llama3", "llama-bpe", "qwen2", "starcoder", "refact"]
        guard known.contains(pre) else {
            throw TokenizerError(g.path, "tokenizer.ggml.pre '\(pre)' is not supported yet (supported: \(known.joined(separator: ", ")))")
        }
        return try ByteLevelBPETokenizer(tokens: tokens, merges: merges, specialTokens: specials,
                                         splitDigits: ["smollm", "starcoder", "refact", "qwen2"].contains(pre),
                                         bosId: g["tokenizer.ggml.bos_token_id"]?.int, eosId: g["tokenizer.ggml.eos_token_id"]?.int,
                                         addBOS: g["tokenizer.ggml.add_bos_token"]?.bool ?? false, source: g.path)
    }

    /// The tokenizer an HF `tokenizer.json` with a BPE model and byte-level pre-tokenizer describes.
    static func fromTokenizerJSON(_ json: JSONValue, path: String) throws -> ByteLevelBPETokenizer {
        guard let model = json["model"], let vocabObj = model["vocab"]?.objectValue else { throw TokenizerError(path, "model.vocab: missing") }
        var tokens = [String](repeating: "", count: vocabObj.count)
        var maxId = -1
        for (t, v) in vocabObj {
            guard let i = v.intValue, i >= 0, i < 10_000_000 else { throw TokenizerError(path, "model.vocab.\(t): invalid id") }
            if Int(i) >= tokens.count { tokens += [String](repeating: "", count: Int(i) + 1 - tokens.count) }
            tokens[Int(i)] = t; maxId = max(maxId, Int(i))
        }
        let added = try parseAddedTokens(json, path: path)
        for a in added {
            if a.id >= tokens.count { tokens += [String](repeating: "", count: a.id + 1 - tokens.count) }
            tokens[a.id] = a.content
        }
        let merges: [String] = try (model["merges"]?.arrayValue ?? []).enumerated().map { i, m in
            if let s = m.stringValue { return s }
            if let pair = m.arrayValue, pair.count == 2, let a = pair[0].stringValue, let b = pair[1].stringValue { return a + " " + b }
            throw TokenizerError(path, "model.merges[\(i)]: expected \"a b\" or [a, b]")
        }
        // Pre-tokenizer: ByteLevel, optionally after Digits(individual_digits).
        let pre = json["pre_tokenizer"]
        var steps = [pre].compactMap { $0 }
        if pre?["type"]?.stringValue == "Sequence" { steps = pre?["pretokenizers"]?.arrayValue ?? [] }
        var digits = false, byteLevel = false
        for s in steps {
            switch s["type"]?.stringValue {
            case "Digits"?: digits = s["individual_digits"]?.boolValue ?? false
            case "ByteLevel"?:
                byteLevel = true
                if s["add_prefix_space"]?.boolValue == true { throw TokenizerError(path, "pre_tokenizer ByteLevel add_prefix_space is not supported yet") }
            case let t: throw TokenizerError(path, "pre_tokenizer '\(t ?? "?")' is not supported with BPE (supported: ByteLevel, Digits)")
            }
        }
        guard byteLevel else { throw TokenizerError(path, "only byte-level BPE is supported (pre_tokenizer ByteLevel)") }
        let special = added.filter(\.special).map(\.id)
        func find(_ names: [String]) -> Int? { names.lazy.compactMap { n in added.first { $0.content == n }?.id }.first }
        return try ByteLevelBPETokenizer(tokens: tokens, merges: merges, specialTokens: added.map(\.id), splitDigits: digits,
                                         bosId: find(["<|im_start|>", "<s>", "<|begin_of_text|>", "<|endoftext|>"]),
                                         eosId: find(["<|im_end|>", "</s>", "<|end_of_text|>", "<|endoftext|>"]),
                                         addBOS: false, source: path, specialIds: special)
    }

    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        if addSpecialTokens && addBOS, let b = bosId { ids.append(b) }
        for seg in added.split(text) {
            if let id = seg.id { ids.append(id); continue }
            for piece in preTokenize(seg.text) { ids += bpe(piece) }
        }
        return ids
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && id < tokens.count {
            if special.contains(id) {
                if !skipSpecialTokens { bytes += Array(tokens[id].utf8) }
                continue
            }
            for u in tokens[id].unicodeScalars {
                if let b = ByteMap.byte[u] { bytes.append(b) } else { bytes += Array(String(u).utf8) }
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Byte-level text of one token, for streaming: the raw bytes (may be a partial UTF-8 sequence).
    public func bytes(of id: Int) -> [UInt8] {
        guard id >= 0 && id < tokens.count, !special.contains(id) else { return [] }
        return tokens[id].unicodeScalars.flatMap { u in ByteMap.byte[u].map { [$0] } ?? Array(String(u).utf8) }
    }

    // MARK: - BPE

    func bpe(_ piece: String) -> [Int] {
        lock.lock()
        if let c = cache[piece] { lock.unlock(); return c }
        lock.unlock()
        let symbols = Self.merge(Array(piece.utf8).map { String(ByteMap.char[Int($0)]) }, ranks: ranks)
        var ids: [Int] = []
        for s in symbols {
            if let id = vocab[s] { ids.append(id) }
            else { for u in s.unicodeScalars { if let id = vocab[String(u)] { ids.append(id) } } }
        }
        lock.lock(); if cache.count < 100_000 { cache[piece] = ids }; lock.unlock()
        return ids
    }

    /// Applies the merges lowest rank first, and the occurrences of one merge left to right (GPT-2's
    /// order: every occurrence of the best pair is merged before the next pair is chosen).
    static func merge(_ start: [String], ranks: [Pair: Int]) -> [String] {
        var q = MergeQueue<Int>(start) { a, b in a == b ? nil : a < b }
        func offer(_ l: Int) {
            if let r = q.right(of: l), let rank = ranks[Pair(a: q.symbols[l], b: q.symbols[r])] { q.push(rank, left: l) }
        }
        for i in start.indices { offer(i) }
        while let c = q.pop() {
            // Skip a candidate whose symbols changed since it was queued.
            guard q.isAlive(c.left), let r = q.right(of: c.left), ranks[Pair(a: q.symbols[c.left], b: q.symbols[r])] == c.key else { continue }
            q.merge(c.left)
            if let l = q.left(of: c.left) { offer(l) }
            offer(c.left)
        }
        return q.result
    }

    // MARK: - Pre-tokenizer

    /// Digits one by one (when configured), then the GPT-2 pattern
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    func preTokenize(_ text: String) -> [String] {
        var out: [String] = []
        if splitDigits {
            var cur = String.UnicodeScalarView()
            for u in text.unicodeScalars {
                if CharClass.isNumber(u) {
                    if !cur.isEmpty { out += gpt2Split(Array(cur)); cur = String.UnicodeScalarView() }
                    out.append(String(u))
                } else { cur.append(u) }
            }
            if !cur.isEmpty { out += gpt2Split(Array(cur)) }
            return out
        }
        return gpt2Split(Array(text.unicodeScalars))
    }

    func gpt2Split(_ s: [Unicode.Scalar]) -> [String] {
        var out: [String] = []
        var i = 0
        let n = s.count
        func emit(_ a: Int, _ b: Int) { out.append(String(String.UnicodeScalarView(s[a..<b]))) }
        while i < n {
            let c = s[i]
            // Contractions.
            if c == "'" && i + 1 < n {
                let rest = s[(i + 1)..<min(n, i + 3)].map { Character($0) }
                if let m = ["re", "ve", "ll"].first(where: { rest.count >= 2 && String(rest.prefix(2)) == $0 }) {
                    emit(i, i + 1 + m.count); i += 1 + m.count; continue
                }
                if let f = rest.first, "stmd".contains(f) { emit(i, i + 2); i += 2; continue }
            }
            let start = i
            var j = i
            if c == " " && i + 1 < n && !CharClass.isSpace(s[i + 1]) { j = i + 1 }
            let k = s[j]
            if CharClass.isLetter(k) {
                while j < n && CharClass.isLetter(s[j]) { j += 1 }
                emit(start, j); i = j; continue
            }
            if CharClass.isNumber(k) {
                while j < n && CharClass.isNumber(s[j]) { j += 1 }
                emit(start, j); i = j; continue
            }
            if !CharClass.isSpace(k) {
                while j < n && !CharClass.isSpace(s[j]) && !CharClass.isLetter(s[j]) && !CharClass.isNumber(s[j]) { j += 1 }
                emit(start, j); i = j; continue
            }
            // Whitespace run: leave the last one to prefix a following non-space.
            j = i
            while j < n && CharClass.isSpace(s[j]) { j += 1 }
            if j < n && j - i > 1 { j -= 1 }
            emit(i, j); i = j
        }
        return out
    }
}

enum CharClass {
    static func isLetter(_ u: Unicode.Scalar) -> Bool {
        switch u.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }
    static func isNumber(_ u: Unicode.Scalar) -> Bool {
        switch u.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }
    static func isSpace(_ u: Unicode.Scalar) -> Bool { u.properties.isWhitespace }
}

/// GPT-2's reversible byte ⇄ printable-character map (`bytes_to_unicode`).
enum ByteMap {
    static let char: [Unicode.Scalar] = {
        var bs = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) { bs.append(b); cs.append(256 + n); n += 1 }
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        for (b, c) in zip(bs, cs) { table[b] = Unicode.Scalar(UInt32(c))! }
        return table
    }()
    static let byte: [Unicode.Scalar: UInt8] = {
        var d: [Unicode.Scalar: UInt8] = [:]
        for (b, c) in char.enumerated() { d[c] = UInt8(b) }
        return d
    }()
}
