import GraftAPI
import Foundation
import GraftModels
import GraftTensor
import GraftText

/// A generated token with its log-probability and the most likely alternatives, when asked for.
public struct TokenInfo: Sendable {
    public let id: Int
    public let bytes: [UInt8]
    public let logprob: Float
    public let top: [(id: Int, bytes: [UInt8], logprob: Float)]
}

/// What a generation reports as it goes: text as it becomes final (whole UTF-8 characters, never a
/// piece of a stop sequence), the tokens consumed since the last report, then how it ended.
public enum GenerationEvent: Sendable {
    case text(String, tokens: [TokenInfo])
    /// `reason` as OpenAI gives it: `stop` (end-of-sequence or a stop sequence) or `length`.
    case finished(reason: String, promptTokens: Int, completionTokens: Int)
    case failed(APIError)
}

/// Continuous batching over one base model: requests join the running batch at token boundaries, their
/// prompts prefilled in the same pass as the others' decode steps; each pass multiplies the base weights
/// once for every row and each request's adapters on its own rows only (`LlamaModel.forward(batch:)`).
/// KV-cache memory is reserved per request (prompt + max tokens) against `kvBudgetBytes`; a request
/// waits until its share is free, and is refused when the queue is full or it could never fit.
public final class GenerationEngine: @unchecked Sendable {
    public struct Limits: Sendable {
        public var maxBatch = 32
        public var kvBudgetBytes = 1 << 30
        public var maxQueue = 256
        /// Prompt tokens prefilled in one pass at most (beyond the first request's), so that a burst of
        /// long prompts does not stall the running decode steps for long.
        public var maxPrefillTokens = 1024
        public init() {}
    }

    /// A submitted request, shared by the HTTP handler (which may cancel it) and the engine thread.
    final class Job: @unchecked Sendable {
        let prompt: [Int]
        let maxTokens: Int
        let request: GenerationRequest
        let mix: AdapterMix
        /// The adapter label metrics count it under.
        let label: String
        let reserve: Int
        let continuation: AsyncStream<GenerationEvent>.Continuation
        let submitted = ContinuousClock.now
        var cancelled = false  // guarded by the engine's lock

        init(prompt: [Int], maxTokens: Int, request: GenerationRequest, mix: AdapterMix, label: String, reserve: Int,
             continuation: AsyncStream<GenerationEvent>.Continuation) {
            self.prompt = prompt; self.maxTokens = maxTokens; self.request = request; self.mix = mix; self.label = label
            self.reserve = reserve; self.continuation = continuation
        }
    }

    /// A request in the running batch.
    struct Slot {
        let job: Job
        var cache: LlamaModel.KVCache
        var sampler: Sampler
        var next: [Int]
        var generated = 0
        var text = TextAssembler(stops: [])
        var tokens: [TokenInfo] = []
    }

    public let lm: CausalLM
    public let limits: Limits
    let metrics: ServeMetrics?
    private let cond = NSCondition()
    private var pending: [Job] = []
    private var reserved = 0
    private var running = 0
    private var stopping = false
    private var thread: Thread?
    private let ended = DispatchSemaphore(value: 0)
    private var active: [Slot] = []  // the engine thread's own

    public init(lm: CausalLM, limits: Limits, metrics: ServeMetrics? = nil) {
        self.lm = lm; self.limits = limits; self.metrics = metrics
    }


    /// Queued and running requests.
    public var load: (queued: Int, running: Int) { cond.lock(); defer { cond.unlock() }; return (pending.count, running) }

    public func start() {
        let t = Thread { [self] in loop() }
        t.name = "graft-engine"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    /// Stops taking requests; the running and queued ones finish, then the engine thread ends.
    public func drain() {
        cond.lock(); stopping = true; cond.broadcast(); cond.unlock()
        if thread != nil { ended.wait(); ended.signal() }
    }

    /// Queues a request (prompt as token ids): its `n` choices as `n` sequences, choice i sampled with
    /// seed + i; each one's events arrive on its own stream. All are queued or none (an error). Cancelling
    /// a stream's consumer (a client that went away) frees its slot at the next token boundary.
    public func submit(prompt: [Int], request: GenerationRequest, mix: AdapterMix, label: String) throws -> [AsyncStream<GenerationEvent>] {
        // A prompt or prefix adapter's virtual tokens take positions of the context (and cache) before the prompt.
        let virtual = (try? mix.virtualTokens())??.count ?? 0
        let context = lm.model.config.contextLength - virtual
        let ahead = virtual > 0 ? " after the adapter's \(virtual) virtual tokens" : ""
        guard !prompt.isEmpty else { throw APIError.invalid("the prompt encodes to no tokens", param: request.isChat ? "messages" : "prompt") }
        guard prompt.count < context else {
            throw APIError.invalid("the prompt is \(prompt.count) tokens; this model's context\(ahead) is \(context), which leaves no room to generate", param: request.isChat ? "messages" : "prompt", code: "context_length_exceeded")
        }
        let room = context - prompt.count
        if let m = request.maxTokens, m > room {
            throw APIError.invalid("the prompt (\(prompt.count) tokens) plus max_tokens (\(m)) exceed this model's context\(ahead) of \(context) tokens", param: "max_tokens", code: "context_length_exceeded")
        }
        let maxTokens = request.maxTokens ?? room
        let reserve = (virtual + prompt.count + maxTokens) * lm.model.cacheBytesPerPosition
        guard reserve <= limits.kvBudgetBytes else {
            throw APIError.invalid("the prompt plus max_tokens need \(reserve >> 20) MB of KV cache; this server allows \(limits.kvBudgetBytes >> 20) MB in all (--kv-cache-mb): ask for fewer tokens", param: "max_tokens", code: "kv_cache_exceeded")
        }
        var jobs: [Job] = [], streams: [AsyncStream<GenerationEvent>] = []
        for i in 0..<request.n {
            var choice = request
            choice.sampling.seed &+= UInt64(i)
            var continuation: AsyncStream<GenerationEvent>.Continuation!
            streams.append(AsyncStream<GenerationEvent>(bufferingPolicy: .unbounded) { continuation = $0 })
            let job = Job(prompt: prompt, maxTokens: maxTokens, request: choice, mix: mix, label: label, reserve: reserve, continuation: continuation)
            continuation.onTermination = { [weak self, weak job] termination in
                guard case .cancelled = termination, let self, let job else { return }
                self.cond.lock(); job.cancelled = true; self.cond.broadcast(); self.cond.unlock()
            }
            jobs.append(job)
        }
        cond.lock(); defer { cond.unlock() }
        guard !stopping else { throw APIError(status: 503, message: "the server is shutting down", type: "server_error", retryAfter: 5) }
        // Requests beyond the batch's free rows wait; at most `maxQueue` of them.
        let waiting = running + pending.count - limits.maxBatch
        guard waiting + jobs.count <= limits.maxQueue else {
            throw APIError(status: 429, message: "\(max(waiting, 0)) requests are already waiting for the \(limits.maxBatch) batch rows; try again shortly", type: "rate_limit_error", code: "queue_full", retryAfter: 1)
        }
        pending += jobs
        metrics?.queueDepth.set(Double(pending.count))
        cond.signal()
        return streams
    }

    // MARK: - The engine thread

    private func loop() {
        while true {
            cond.lock()
            while pending.isEmpty && active.isEmpty && !stopping { cond.wait() }
            if stopping && pending.isEmpty && active.isEmpty { cond.unlock(); ended.signal(); return }
            // Cancelled requests leave; waiting ones join while rows, memory and the prefill budget allow.
            for (i, s) in active.enumerated().reversed() where s.job.cancelled { finishLocked(i, reason: nil) }
            pending.removeAll { $0.cancelled }
            var prefill = 0
            while let j = pending.first, active.count < limits.maxBatch, reserved + j.reserve <= limits.kvBudgetBytes,
                  prefill == 0 || prefill + j.prompt.count <= limits.maxPrefillTokens {
                pending.removeFirst()
                reserved += j.reserve
                running += 1
                prefill += j.prompt.count
                var slot = Slot(job: j, cache: lm.model.makeCache(reserving: j.reserve / lm.model.cacheBytesPerPosition), sampler: Sampler(j.request.sampling),
                                next: j.prompt)
                slot.text = TextAssembler(stops: j.request.stop)
                active.append(slot)
            }
            metrics?.queueDepth.set(Double(pending.count))
            metrics?.active.set(Double(active.count))
            metrics?.kvReserved.set(Double(reserved))
            cond.unlock()
            if !active.isEmpty { step() }
        }
    }

    /// One pass over every active request, then each one's next token.
    private func step() {
        // Same adapters side by side: one row group per layer for them.
        active.sort { $0.job.mix.key < $1.job.mix.key }
        var batch = active.map { LlamaModel.BatchSequence(tokens: $0.next, cache: LlamaModel.KVCache(layers: 0), adapters: $0.job.mix) }
        for i in active.indices { swap(&batch[i].cache, &active[i].cache) }
        let logits: [[[Float]]]
        do {
            logits = try lm.model.forward(batch: &batch)
        } catch {
            cond.lock()
            for i in active.indices.reversed() {
                active[i].job.continuation.yield(.failed(APIError(status: 500, message: "\(error)", type: "server_error")))
                finishLocked(i, reason: nil)
            }
            cond.unlock()
            return
        }
        metrics?.batchRows.record(Double(batch.reduce(0) { $0 + $1.tokens.count }))
        metrics?.batchSequences.record(Double(batch.count))
        var done: [(Int, String)] = []
        for i in active.indices {
            swap(&batch[i].cache, &active[i].cache)
            if let r = advance(&active[i], logits: logits[i][0]) { done.append((i, r)) }
        }
        guard !done.isEmpty else { return }
        cond.lock()
        for (i, r) in done.reversed() { finishLocked(i, reason: r) }
        cond.unlock()
    }

    /// Picks the slot's next token and reports its text; the finish reason when it is done.
    private func advance(_ s: inout Slot, logits: [Float]) -> String? {
        let job = s.job
        let id = s.sampler.next(logits)
        if s.generated == 0 {
            metrics?.firstToken(label: job.label, seconds: (ContinuousClock.now - job.submitted).seconds)
            metrics?.promptTokens(label: job.label, count: job.prompt.count)
        }
        s.generated += 1
        metrics?.generatedTokens(label: job.label)
        let eos = !job.request.ignoreEOS && id == lm.eosId
        let bytes = eos ? [] : lm.tokenizer.bytes(of: id)
        if let n = job.request.logprobs { s.tokens.append(Self.tokenInfo(id, bytes: bytes, logits: logits, top: n, tokenizer: lm.tokenizer)) }
        if eos { return "stop" }
        let (piece, stopped) = s.text.append(bytes)
        if !piece.isEmpty || stopped {
            job.continuation.yield(.text(piece, tokens: s.tokens)); s.tokens = []
        }
        if stopped { return "stop" }
        if s.generated >= job.maxTokens || s.cache.count + 1 > lm.model.config.contextLength { return "length" }
        s.next = [id]
        return nil
    }

    /// Ends slot `i` (lock held): the rest of its text, its usage, its memory back. `reason` nil: cancelled
    /// or failed (nothing more is sent).
    private func finishLocked(_ i: Int, reason: String?) {
        var s = active.remove(at: i)
        if let reason {
            let rest = s.text.finish()
            if !rest.isEmpty || !s.tokens.isEmpty { s.job.continuation.yield(.text(rest, tokens: s.tokens)) }
            s.job.continuation.yield(.finished(reason: reason, promptTokens: s.job.prompt.count, completionTokens: s.generated))
        }
        s.job.continuation.finish()
        reserved -= s.job.reserve
        running -= 1
        metrics?.active.set(Double(active.count))
        metrics?.kvReserved.set(Double(reserved))
    }

    static func tokenInfo(_ id: Int, bytes: [UInt8], logits: [Float], top n: Int, tokenizer: ByteLevelBPETokenizer) -> TokenInfo {
        let m = logits.max() ?? 0
        var sum = 0.0
        for l in logits { sum += exp(Double(l - m)) }
        let lse = Float(Double(m) + log(sum))
        var best: [(Int, Float)] = []
        if n > 0 {
            for (j, l) in logits.enumerated() where best.count < n || l > best[best.count - 1].1 {
                let at = best.firstIndex { l > $0.1 } ?? best.count
                best.insert((j, l), at: at)
                if best.count > n { best.removeLast() }
            }
        }
        return TokenInfo(id: id, bytes: bytes, logprob: logits[id] - lse, top: best.map { ($0.0, tokenizer.bytes(of: $0.0), $0.1 - lse) })
    }
}

/// Turns token bytes into text that is safe to send: whole UTF-8 characters only, nothing that could
/// still become a stop sequence, and the text cut before a stop sequence once one appears.
struct TextAssembler {
    let stops: [String]
    private var partial: [UInt8] = []
    private var held = ""

    init(stops: [String]) { self.stops = stops }

    /// Adds a token's bytes; returns the text now final and whether a stop sequence was reached.
    mutating func append(_ bytes: [UInt8]) -> (String, Bool) {
        partial += bytes
        let cut = Self.completePrefix(partial)
        held += String(decoding: partial[..<cut], as: UTF8.self)
        partial.removeFirst(cut)
        if let r = stops.compactMap({ held.range(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            let out = String(held[..<r.lowerBound])
            held = ""; partial = []
            return (out, true)
        }
        // Hold back the longest tail that begins some stop sequence.
        var keep = 0
        for s in stops {
            for k in stride(from: min(s.count - 1, held.count), to: keep, by: -1) where held.hasSuffix(s.prefix(k)) { keep = k; break }
        }
        let out = String(held.dropLast(keep))
        held = String(held.suffix(keep))
        return (out, false)
    }

    /// What is left when generation ends without a stop sequence.
    mutating func finish() -> String {
        let out = held + String(decoding: partial, as: UTF8.self)
        held = ""; partial = []
        return out
    }

    /// The length of the longest prefix of `b` that ends on a character boundary.
    static func completePrefix(_ b: [UInt8]) -> Int {
        var i = b.count
        // Look back over at most 3 continuation bytes for the last lead byte.
        var back = 0
        while i > 0 && back < 4 {
            let c = b[i - 1]
            if c & 0xC0 != 0x80 {
                let need = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1
                return back + 1 >= need ? b.count : i - 1
            }
            i -= 1; back += 1
        }
        return b.count
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
