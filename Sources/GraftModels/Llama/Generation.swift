import Foundation
import GraftTensor

/// How the next token is chosen.
public struct SamplingOptions: Sendable {
    /// 0: greedy (argmax).
    public var temperature: Float = 0
    /// Keep the k most likely tokens (0: all).
    public var topK: Int = 0
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    public var topP: Float = 1
    public var seed: UInt64 = 0
    public init() {}
}

/// Picks tokens from logits: greedy, or temperature → top-k → top-p → a draw from a seeded generator.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    var rng: SeededRNG

    public init(_ options: SamplingOptions) { self.options = options; rng = SeededRNG(seed: options.seed) }

    public mutating func next(_ logits: [Float]) -> Int {
        if options.temperature <= 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return best
        }
        var idx = Array(logits.indices).sorted { logits[$0] > logits[$1] }
        if options.topK > 0 { idx = Array(idx.prefix(options.topK)) }
        let m = logits[idx[0]]
        var p = idx.map { exp(Double((logits[$0] - m) / options.temperature)) }
        let total = p.reduce(0, +)
        p = p.map { $0 / total }
        if options.topP < 1 {
            var cum = 0.0, keep = 0
            for q in p { cum += q; keep += 1; if cum >= Double(options.topP) { break } }
            idx = Array(idx.prefix(keep)); p = Array(p.prefix(keep))
            let s = p.reduce(0, +); p = p.map { $0 / s }
        }
        let u = Double(rng.nextUnitFloat())
        var cum = 0.0
        for (k, q) in p.enumerated() { cum += q; if u < cum { return idx[k] } }
        return idx[idx.count - 1]
    }
}

/// Timing of a generation, as llama.cpp reports it.
public struct GenerationStats: Sendable {
    public let promptTokens: Int, generatedTokens: Int
    public let promptSeconds: Double, generateSeconds: Double
}

extension CausalLM {
    /// Generates after `prompt` (token ids) until EOS (unless `ignoreEOS`), a stop string, or
    /// `maxTokens`; `onToken` receives each new token id as it is produced (return false to stop).
    public func generate(prompt: [Int], maxTokens: Int, sampling: SamplingOptions, ignoreEOS: Bool = false,
                         stop: [String] = [], onToken: (Int) -> Bool = { _ in true }) throws -> (ids: [Int], stats: GenerationStats) {
        guard !prompt.isEmpty else { throw ModelError("empty prompt") }
        var cache = model.makeCache()
        var sampler = Sampler(sampling)
        let t0 = Date()
        var logits = try model.forward(prompt, cache: &cache)[0]
        let t1 = Date()
        var out: [Int] = []
        var text = ""
        while out.count < maxTokens {
            let id = sampler.next(logits)
            out.append(id)
            if !onToken(id) { break }
            if !ignoreEOS && id == eosId { break }
            if !stop.isEmpty {
                text = tokenizer.decode(out, skipSpecialTokens: false)
                if stop.contains(where: { text.contains($0) }) { break }
            }
            if out.count == maxTokens || cache.count + 1 > model.config.contextLength { break }
            logits = try model.forward([id], cache: &cache)[0]
        }
        let t2 = Date()
        return (out, GenerationStats(promptTokens: prompt.count, generatedTokens: out.count,
                                     promptSeconds: t1.timeIntervalSince(t0), generateSeconds: t2.timeIntervalSince(t1)))
    }
}
