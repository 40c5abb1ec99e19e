import Foundation
import GraftFormats

/// BERT's WordPiece tokenizer as HF `tokenizers` builds it from `tokenizer.json`: `BertNormalizer`
/// (clean text, CJK spacing, lowercase, accent stripping), `BertPreTokenizer` (whitespace and
/// punctuation), greedy longest-match-first WordPiece with the `##` prefix, and a `[CLS] … [SEP]` template.
public struct WordPieceTokenizer: Tokenizer {
    public let vocab: [String: Int]
    let inverse: [Int: String]
    let unkId: Int
    let prefix: String
    let maxCharsPerWord: Int
    /// The longest vocabulary entry, in Unicode scalars: no longer candidate can match, so the longest-match
    /// search starts there instead of at the word's end (the same pieces, far fewer lookups in long words).
    let maxTokenScalars: Int
    let lowercase: Bool
    let stripAccents: Bool
    let cleanText: Bool
    let chineseChars: Bool
    /// Ids put before and after a single sequence by the post-processor.
    let prefixIds: [Int]
    let suffixIds: [Int]
    let special: Set<Int>
    let added: AddedTokenSplitter

    public var vocabularySize: Int { vocab.count }
    public func id(of token: String) -> Int? { vocab[token] }
    public func token(of id: Int) -> String? { inverse[id] }

    /// Builds the tokenizer from a parsed `tokenizer.json` whose model is WordPiece.
    init(json: JSONValue, path: String) throws {
        guard let model = json["model"], let v = model["vocab"]?.objectValue else {
            throw TokenizerError(path, "model.vocab: missing")
        }
        var vocab: [String: Int] = [:]
        for (k, val) in v {
            guard let i = val.intValue, i >= 0 else { throw TokenizerError(path, "model.vocab.\(k): not a non-negative id") }
            vocab[k] = Int(i)
        }
        self.vocab = vocab
        maxTokenScalars = vocab.keys.lazy.map { $0.unicodeScalars.count }.max() ?? 0
        inverse = Dictionary(vocab.map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let unk = model["unk_token"]?.stringValue ?? "[UNK]"
        guard let u = vocab[unk] else { throw TokenizerError(path, "model.unk_token '\(unk)' is not in the vocabulary") }
        unkId = u
        prefix = model["continuing_subword_prefix"]?.stringValue ?? "##"
        maxCharsPerWord = Int(model["max_input_chars_per_word"]?.intValue ?? 100)
        let norm = json["normalizer"]
        let normType = norm?["type"]?.stringValue
        guard normType == nil || normType == "BertNormalizer" else {
            throw TokenizerError(path, "normalizer.type '\(normType!)' is not supported with WordPiece (supported: BertNormalizer)")
        }
        lowercase = norm?["lowercase"]?.boolValue ?? true
        stripAccents = norm?["strip_accents"]?.boolValue ?? lowercase
        cleanText = norm?["clean_text"]?.boolValue ?? true
        chineseChars = norm?["handle_chinese_chars"]?.boolValue ?? true
        let addedTokens = try parseAddedTokens(json, path: path)
        added = AddedTokenSplitter(addedTokens.map { ($0.content, $0.id) })
        special = Set(addedTokens.filter(\.special).map(\.id))
        (prefixIds, suffixIds) = try parseTemplate(json["post_processor"], vocab: vocab, path: path)
    }

    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = addSpecialTokens ? prefixIds : []
        for seg in added.split(text) {
            if let id = seg.id { ids.append(id); continue }
            for word in preTokenize(normalize(seg.text)) { wordPiece(word, into: &ids) }
        }
        if addSpecialTokens { ids += suffixIds }
        return ids
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        var out = ""
        for id in ids {
            if skipSpecialTokens && special.contains(id) { continue }
            guard let t = inverse[id] else { continue }
            if t.hasPrefix(prefix) { out += t.dropFirst(prefix.count) } else { out += (out.isEmpty ? "" : " ") + t }
        }
        // WordPiece decoder's cleanup: no space before punctuation and contractions.
        for (a, b) in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                       (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")] {
            out = out.replacingOccurrences(of: a, with: b)
        }
        return out
    }

    // MARK: - Normalizer (BertNormalizer)

    func normalize(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for u in text.unicodeScalars {
            if cleanText {
                if u.value == 0 || u.value == 0xFFFD || (isControl(u)) { continue }
                if isWhitespace(u) { out.append(" "); continue }
            }
            if chineseChars && isCJK(u) { out.append(" "); out.append(u); out.append(" "); continue }
            out.append(u)
        }
        var s = String(out)
        if stripAccents {
            s = String(String.UnicodeScalarView(s.decomposedStringWithCanonicalMapping.unicodeScalars.filter {
                $0.properties.generalCategory != .nonspacingMark
            }))
        }
        if lowercase { s = s.lowercased() }
        return s
    }

    // MARK: - Pre-tokenizer (BertPreTokenizer): split on whitespace, punctuation as its own word.

    func preTokenize(_ text: String) -> [String] {
        var words: [String] = []
        var cur = String.UnicodeScalarView()
        for u in text.unicodeScalars {
            if u.properties.isWhitespace {
                if !cur.isEmpty { words.append(String(cur)); cur = String.UnicodeScalarView() }
            } else if isPunctuation(u) {
                if !cur.isEmpty { words.append(String(cur)); cur = String.UnicodeScalarView() }
                words.append(String(u))
            } else {
                cur.append(u)
            }
        }
        if !cur.isEmpty { words.append(String(cur)) }
        return words
    }

    // MARK: - Model

    func wordPiece(_ word: String, into ids: inout [Int]) {
        let count = word.unicodeScalars.count
        if count > maxCharsPerWord { ids.append(unkId); return }
        // Candidates are built from the word's UTF-8 bytes cut at scalar boundaries (short ones are small
        // strings, no allocation), a continuation behind the prefix in one reused buffer.
        let utf8 = Array(word.utf8)
        var bounds = [0]
        bounds.reserveCapacity(count + 1)
        for u in word.unicodeScalars { bounds.append(bounds[bounds.count - 1] + UTF8.width(u)) }
        var continuation = Array(prefix.utf8)
        let prefixBytes = continuation.count
        var pieces: [Int] = []
        var start = 0
        while start < count {
            var end = min(count, start + maxTokenScalars)
            var found: Int? = nil
            while start < end {
                let bytes = utf8[bounds[start]..<bounds[end]]
                let candidate: String
                if start == 0 {
                    candidate = String(decoding: bytes, as: UTF8.self)
                } else {
                    continuation.removeSubrange(prefixBytes...)
                    continuation += bytes
                    candidate = String(decoding: continuation, as: UTF8.self)
                }
                if let id = vocab[candidate] { found = id; break }
                end -= 1
            }
            guard let id = found else { ids.append(unkId); return }
            pieces.append(id)
            start = end
        }
        ids += pieces
    }
}

// MARK: - Character classes as BERT defines them

func isWhitespace(_ u: Unicode.Scalar) -> Bool {
    u == " " || u == "\t" || u == "\n" || u == "\r" || u.properties.generalCategory == .spaceSeparator
}

func isControl(_ u: Unicode.Scalar) -> Bool {
    if u == "\t" || u == "\n" || u == "\r" { return false }
    let c = u.properties.generalCategory
    return c == .control || c == .format
}

func isPunctuation(_ u: Unicode.Scalar) -> Bool {
    let v = u.value
    if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
    switch u.properties.generalCategory {
    case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
         .finalPunctuation, .otherPunctuation: return true
    default: return false
    }
}

func isCJK(_ u: Unicode.Scalar) -> Bool {
    let v = u.value
    return (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
        || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B820...0x2CEAF).contains(v)
        || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
}

// MARK: - Shared tokenizer.json parts

struct AddedToken { let content: String; let id: Int; let special: Bool }

func parseAddedTokens(_ json: JSONValue, path: String) throws -> [AddedToken] {
    var out: [AddedToken] = []
    for (i, t) in (json["added_tokens"]?.arrayValue ?? []).enumerated() {
        guard let c = t["content"]?.stringValue, let id = t["id"]?.intValue, id >= 0 else {
            throw TokenizerError(path, "added_tokens[\(i)]: needs content and id")
        }
        out.append(AddedToken(content: c, id: Int(id), special: t["special"]?.boolValue ?? false))
    }
    return out
}

/// The ids a `TemplateProcessing` / `BertProcessing` / `RobertaProcessing` post-processor puts around a
/// single sequence ($A).
func parseTemplate(_ pp: JSONValue?, vocab: [String: Int], path: String) throws -> ([Int], [Int]) {
    guard let pp, let type = pp["type"]?.stringValue else { return ([], []) }
    switch type {
    case "TemplateProcessing":
        var before: [Int] = [], after: [Int] = []
        var seenSequence = false
        let specials = pp["special_tokens"]
        for item in pp["single"]?.arrayValue ?? [] {
            if item["Sequence"] != nil { seenSequence = true; continue }
            guard let name = item["SpecialToken"]?["id"]?.stringValue else { continue }
            let ids = specials?[name]?["ids"]?.arrayValue?.compactMap { $0.intValue.map(Int.init) } ?? vocab[name].map { [$0] }
            guard let ids else { throw TokenizerError(path, "post_processor: special token '\(name)' has no id") }
            if seenSequence { after += ids } else { before += ids }
        }
        return (before, after)
    case "BertProcessing", "RobertaProcessing":
        guard let cls = pp["cls"]?.arrayValue, cls.count == 2, let c = cls[1].intValue,
              let sep = pp["sep"]?.arrayValue, sep.count == 2, let s = sep[1].intValue else {
            throw TokenizerError(path, "post_processor: \(type) needs cls and sep")
        }
        return ([Int(c)], [Int(s)])
    case "ByteLevel":
        return ([], [])
    default:
        throw TokenizerError(path, "post_processor.type '\(type)' is not supported (TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel)")
    }
}

/// Loads the tokenizer a `tokenizer.json` describes, or the one inside a GGUF file.
public enum TokenizerLoader {
    /// For a model: `path` is a `.gguf` file or a folder holding `tokenizer.json`.
    public static func load(model path: String) throws -> any Tokenizer {
        if path.hasSuffix(".gguf") {
            let g = try GGUFFile(path: path)
            if g["tokenizer.ggml.model"]?.string == "llama" { return try SentencePieceBPETokenizer(gguf: g) }
            return try ByteLevelBPETokenizer.fromGGUF(g)
        }
        let t = (path as NSString).appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: t) else { throw TokenizerError(path, "no tokenizer.json in the model folder") }
        return try load(path: t)
    }

    public static func load(path: String) throws -> any Tokenizer {
        guard let data = FileManager.default.contents(atPath: path) else { throw TokenizerError(path, "cannot read") }
        let json: JSONValue
        do { json = try JSONValue.parse([UInt8](data)) } catch { throw TokenizerError(path, "invalid JSON: \(error)") }
        switch json["model"]?["type"]?.stringValue {
        case "WordPiece"?: return try WordPieceTokenizer(json: json, path: path)
        case "BPE"?: return try ByteLevelBPETokenizer.fromTokenizerJSON(json, path: path)
        case let t?: throw TokenizerError(path, "model.type '\(t)' is not supported yet (supported: WordPiece, BPE)")
        case nil: throw TokenizerError(path, "model.type: missing")
        }
    }
}
