import Foundation
import Dispatch
@testable import GraftTensor
import XCTest

/// The spinning fork–join pool behind decode's matrix–vector products (chunks claimed by free threads).
final class ForkJoinTests: XCTestCase {
    /// Every index of the range is visited exactly once, over many back-to-back jobs (the decode pattern),
    /// including from inside a job (nested: runs inline) and from several threads at once (one gets the
    /// pool, the others run inline).
    func testEveryIndexOnceNestedAndConcurrent() {
        for n in [0, 1, 2, 7, 1000, 49152] {
            for minChunk in [1, 256] {
                for _ in 0..<200 {
                    let hits = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(n, 1))
                    hits.initialize(repeating: 0)
                    let box = UncheckedSendable(hits)
                    forkJoinRanges(count: n, minChunk: minChunk) { r in for i in r { box.value[i] += 1 } }
                    XCTAssertEqual(Array(hits.prefix(n)), [Int32](repeating: 1, count: n), "n = \(n), minChunk \(minChunk)")
                    hits.deallocate()
                }
            }
        }
        // Nested: every inner job, run inline by whichever thread took the outer chunk, still covers its range.
        let outer = 16, inner = 100
        let nested = UnsafeMutableBufferPointer<Int32>.allocate(capacity: outer * inner)
        nested.initialize(repeating: 0)
        let nb = UncheckedSendable(nested)
        forkJoinRanges(count: outer) { r in
            for o in r { forkJoinRanges(count: inner) { ir in for i in ir { nb.value[o * inner + i] += 1 } } }
        }
        XCTAssertEqual(Array(nested), [Int32](repeating: 1, count: outer * inner), "nested jobs")
        nested.deallocate()
        let sums = UnsafeMutableBufferPointer<Int>.allocate(capacity: 8)
        sums.initialize(repeating: 0)
        let s = UncheckedSendable(sums)
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            var total = 0
            let l = NSLock()
            for _ in 0..<100 { forkJoinRanges(count: 64) { r in l.lock(); total += r.count; l.unlock() } }
            s.value[t] = total
        }
        XCTAssertEqual(Array(sums), [Int](repeating: 6400, count: 8))
        sums.deallocate()
    }
}
