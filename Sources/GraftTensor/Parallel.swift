import CKernels
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Number of worker threads Graft uses: `GRAFT_THREADS` if set, else the active cores.
public let graftThreadCount: Int = {
    if let s = getenv("GRAFT_THREADS"), let n = Int(String(cString: s)), n > 0 { return n }
    return max(1, ProcessInfoCores.active)
}()

enum ProcessInfoCores {
    static var active: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
}

/// Splits `0..<count` into contiguous chunks of at least `minChunk` and runs `body` on them in
/// parallel. Small ranges run inline: below ~100 µs of work threads cost more than they give.
public func parallelFor(count: Int, minChunk: Int = 1 << 16, _ body: (Range<Int>) -> Void) {
    let chunks = min(graftThreadCount, max(1, count / max(minChunk, 1)))
    if chunks <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let box = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = count * c / chunks, hi = count * (c + 1) / chunks
            box.value(lo..<hi)
        }
    }
}

/// Runs `body(i)` for each i in `0..<count` in parallel (one task per index).
public func parallelEach(_ count: Int, _ body: (Int) -> Void) {
    if count <= 1 || graftThreadCount == 1 {
        for i in 0..<count { body(i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let box = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: count) { box.value($0) }
    }
}

/// Splits `0..<count` into contiguous chunks — one per thread, up to four per thread as far as each keeps
/// `minChunk` items — and runs `body` on each through Graft's fork–join pool, each chunk taken by whichever thread is free: the
/// calling thread and the pool's workers (`GRAFT_THREADS`, else the cores). For many short jobs — decode's
/// matrix–vector products, tens of microseconds each — where a GCD hand-off (waking a thread through the
/// OS) costs more than the job: the workers spin between jobs and sleep only after ~0.5 ms idle. Chunks
/// rather than one part per thread keep a core shared with another process from holding every job back.
/// Nested or concurrent calls run every chunk on the calling thread.
///
/// Why both bounds (SmolLM2 decode, Zen 3, 2 cores): alone, four chunks per thread for every product cost
/// 3 % (float) to 10 % (8-bit) against one, the claims' cache-line traffic weighing on products of a few
/// microseconds; beside a busy core they gained 5–15 %. Small products keep one chunk per thread, large
/// ones (the FFN's, the vocabulary head) are balanced.
public func forkJoinRanges(count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let threads = graftPoolThreads
    let chunks = max(min(threads, count), min(4 * threads, count / max(1, minChunk)))
    withoutActuallyEscaping(body) { b in
        var job = ForkJoinJob(count: count, body: b)
        withUnsafeMutablePointer(to: &job) { p in
            graft_pool_run({ ctx, chunk, chunks in
                let job = ctx!.assumingMemoryBound(to: ForkJoinJob.self)
                let (c, n, count) = (Int(chunk), Int(chunks), job.pointee.count)
                job.pointee.body(count * c / n..<count * (c + 1) / n)
            }, UnsafeMutableRawPointer(p), Int32(chunks))
        }
    }
}

private struct ForkJoinJob {
    let count: Int
    let body: (Range<Int>) -> Void
}

/// The threads `forkJoinRanges` runs on (its workers + the calling thread).
public var graftPoolThreads: Int { Int(graft_pool_threads()) }

/// Carries a value across a concurrency boundary the compiler cannot check (raw pointers and
/// closures over disjoint ranges of one buffer).
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
