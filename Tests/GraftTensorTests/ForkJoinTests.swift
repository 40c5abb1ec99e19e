import Foundation
import Dispatch
@testable import GraftTensor
import XCTest

/// The spinning fork–join pool behind decode's matrix–vector products.
final class ForkJoinTests: XCTestCase {
    /// Every index of the range is visited exactly once, over many back-to-back jobs (the decode pattern),
    /// including from inside a job (nested: runs inline) and from several threads at once (one gets the
    /// pool, the others run inline).
    func testEveryIndexOnceNestedAndConcurrent() {
        for n in [0, 1, 2, 7, 1000] {
            for _ in 0..<200 {
                let hits = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(n, 1))
                hits.initialize(repeating: 0)
                let box = UncheckedSendable(hits)
                forkJoinRanges(count: n) { r in for i in r { box.value[i] += 1 } }
                XCTAssertEqual(Array(hits.prefix(n)), [Int32](repeating: 1, count: n), "n = \(n)")
                hits.deallocate()
            }
        }
        var nestedParts: [Int] = []
        let lock = NSLock()
        forkJoin { _, parts in
            forkJoin { inner, innerParts in lock.lock(); nestedParts.append(inner * 100 + innerParts); lock.unlock() }
            XCTAssertGreaterThanOrEqual(parts, 1)
        }
        XCTAssertEqual(nestedParts.count, graftPoolParts * graftPoolParts, "each outer part ran every inner part")
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
