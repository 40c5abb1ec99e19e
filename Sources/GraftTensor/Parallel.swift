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

/// Runs `body(part, parts)` for each part of Graft's fork–join pool (`parts` = `GRAFT_THREADS` or the
/// cores), part 0 on the calling thread. For many short jobs — decode's matrix–vector products, tens of
/// microseconds each — where a GCD hand-off (waking a thread through the OS) costs more than the job:
/// the pool's workers spin between jobs and sleep only after ~0.5 ms idle. Nested or concurrent calls
/// run every part on the calling thread.
public func forkJoin(_ body: (_ part: Int, _ parts: Int) -> Void) {
    withoutActuallyEscaping(body) { b in
        var f = b
        withUnsafeMutablePointer(to: &f) { p in
            graft_pool_run({ ctx, part, parts in
                ctx!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(part), Int(parts))
            }, UnsafeMutableRawPointer(p))
        }
    }
}

/// The number of parts `forkJoin` runs (its workers + the calling thread).
public var graftPoolParts: Int { Int(graft_pool_parts()) }

/// Splits `0..<count` into one contiguous range per fork–join part (see `forkJoin`).
public func forkJoinRanges(count: Int, _ body: (Range<Int>) -> Void) {
    forkJoin { part, parts in
        let lo = count * part / parts, hi = count * (part + 1) / parts
        if lo < hi { body(lo..<hi) }
    }
}

/// Carries a value across a concurrency boundary the compiler cannot check (raw pointers and
/// closures over disjoint ranges of one buffer).
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
