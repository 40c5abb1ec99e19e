/// Text ⇄ token ids.
public protocol Tokenizer: Sendable {
    /// Token ids of `text`; with `addSpecialTokens`, wrapped as the model's post-processor says
    /// (e.g. `[CLS] … [SEP]` for BERT).
    func encode(_ text: String, addSpecialTokens: Bool) -> [Int]
    /// Text of `ids`; special tokens are dropped when `skipSpecialTokens`.
    func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String
    var vocabularySize: Int { get }
    func id(of token: String) -> Int?
    func token(of id: Int) -> String?
}

/// A tokenizer file that cannot be used, naming the file and the field.
public struct TokenizerError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let message: String
    public init(_ path: String, _ message: String) { self.path = path; self.message = message }
    public var description: String { "\(path): \(message)" }
}

/// Splits `text` around occurrences of added tokens (longest match first), so they are never broken
/// up by the model. Returns segments with the added token's id, or nil for ordinary text.
struct AddedTokenSplitter: Sendable {
    let tokens: [(content: [Unicode.Scalar], id: Int)]

    init(_ tokens: [(String, Int)]) {
        self.tokens = tokens.filter { !$0.0.isEmpty }.map { (Array($0.0.unicodeScalars), $0.1) }.sorted { $0.content.count > $1.content.count }
    }

    func split(_ text: String) -> [(text: String, id: Int?)] {
        guard !tokens.isEmpty else { return [(text, nil)] }
        let s = Array(text.unicodeScalars)
        var out: [(String, Int?)] = []
        var plain = String.UnicodeScalarView()
        var i = 0
        outer: while i < s.count {
            for t in tokens where t.content.count <= s.count - i && t.content[0] == s[i] {
                if Array(s[i..<(i + t.content.count)]) == t.content {
                    if !plain.isEmpty { out.append((String(plain), nil)); plain = String.UnicodeScalarView() }
                    out.append((String(String.UnicodeScalarView(t.content)), t.id))
                    i += t.content.count
                    continue outer
                }
            }
            plain.append(s[i])
            i += 1
        }
        if !plain.isEmpty { out.append((String(plain), nil)) }
        return out
    }
}
