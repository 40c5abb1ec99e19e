@testable import GraftText
import XCTest

/// The heap-ordered BPE merges (O(n log n)) against the plain loops they replaced (rescan every pair after
/// each merge), kept here as the specification, on random words and random well-formed merge tables.
final class BPEMergeTests: XCTestCase {
    struct RNG: RandomNumberGenerator {
        var s: UInt64
        mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s ^ (s >> 29) }
    }

    /// GPT-2's loop: the lowest-ranked pair, all its occurrences left to right, then again.
    func referenceByteLevel(_ start: [String], _ ranks: [ByteLevelBPETokenizer.Pair: Int]) -> [String] {
        var symbols = start
        while symbols.count > 1 {
            var best = Int.max, at = -1
            for i in 0..<(symbols.count - 1) {
                if let r = ranks[.init(a: symbols[i], b: symbols[i + 1])], r < best { best = r; at = i }
            }
            guard at >= 0 else { break }
            let (a, b) = (symbols[at], symbols[at + 1])
            var merged: [String] = []
            var i = 0
            while i < symbols.count {
                if i + 1 < symbols.count && symbols[i] == a && symbols[i + 1] == b { merged.append(a + b); i += 2 } else { merged.append(symbols[i]); i += 1 }
            }
            symbols = merged
        }
        return symbols
    }

    /// llama.cpp's SentencePiece order: the highest-scoring joinable pair, the leftmost on ties.
    func referenceSentencePiece(_ start: [String], _ vocab: [String: Int], _ scores: [Float]) -> [String] {
        var symbols = start
        while symbols.count > 1 {
            var best: (score: Float, at: Int)? = nil
            for i in 0..<(symbols.count - 1) {
                guard let id = vocab[symbols[i] + symbols[i + 1]] else { continue }
                if best == nil || scores[id] > best!.score { best = (scores[id], i) }
            }
            guard let b = best else { break }
            symbols[b.at] += symbols[b.at + 1]
            symbols.remove(at: b.at + 1)
        }
        return symbols
    }

    func randomWord(_ rng: inout RNG, _ alphabet: [String], length: Int) -> [String] {
        (0..<length).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }
    }

    func testByteLevelMergesEqualGPT2Loop() {
        var rng = RNG(s: 1)
        let alphabet = ["a", "b", "c", "d"]
        for table in 0..<20 {
            // A well-formed table: each merge joins two tokens that exist already.
            var tokens = alphabet, ranks: [ByteLevelBPETokenizer.Pair: Int] = [:]
            while ranks.count < 12 + table {
                let a = tokens[Int(rng.next() % UInt64(tokens.count))], b = tokens[Int(rng.next() % UInt64(tokens.count))]
                let p = ByteLevelBPETokenizer.Pair(a: a, b: b)
                if ranks[p] == nil { ranks[p] = ranks.count; tokens.append(a + b) }
            }
            for _ in 0..<50 {
                let word = randomWord(&rng, alphabet, length: 1 + Int(rng.next() % 40))
                XCTAssertEqual(ByteLevelBPETokenizer.merge(word, ranks: ranks), referenceByteLevel(word, ranks), word.joined())
            }
        }
        XCTAssertEqual(ByteLevelBPETokenizer.merge([], ranks: [:]), [])
    }

    func testSentencePieceMergesEqualLlamaCppOrder() {
        var rng = RNG(s: 2)
        let alphabet = ["▁", "x", "y", "z"]
        for _ in 0..<20 {
            var vocab: [String: Int] = [:], scores: [Float] = []
            for t in alphabet { vocab[t] = scores.count; scores.append(0) }
            var tokens = alphabet
            while tokens.count < 24 {
                let t = tokens[Int(rng.next() % UInt64(tokens.count))] + tokens[Int(rng.next() % UInt64(tokens.count))]
                guard vocab[t] == nil else { continue }
                vocab[t] = scores.count
                scores.append(Float(rng.next() % 5))  // few distinct scores: many ties, decided by position
                tokens.append(t)
            }
            for _ in 0..<50 {
                let word = randomWord(&rng, alphabet, length: 1 + Int(rng.next() % 40))
                XCTAssertEqual(SentencePieceBPETokenizer.merge(word, vocab: vocab, scores: scores),
                               referenceSentencePiece(word, vocab, scores), word.joined())
            }
        }
    }
}
