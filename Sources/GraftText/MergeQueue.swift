/// The symbols of one piece of text being merged by a BPE tokenizer, as a linked list over an array, with
/// the candidate merges of neighbouring symbols in a binary heap: O(n log n) for a piece of n symbols,
/// where rescanning every pair after each merge took O(n²) (a 64 KB run of letters: 41 s). Entries whose
/// symbols have changed since they were queued are skipped when they come up (`isCurrent`).
struct MergeQueue<Key> {
    struct Candidate { let key: Key; let left: Int }
    private(set) var symbols: [String]
    private var next: [Int], prev: [Int], alive: [Bool]
    private var heap: [Candidate] = []
    /// Whether `a` should merge before `b` (a strict order; ties broken by the left position first).
    private let before: (Candidate, Candidate) -> Bool

    init(_ symbols: [String], before: @escaping (Key, Key) -> Bool?) {
        self.symbols = symbols
        let n = symbols.count
        next = (0..<n).map { $0 + 1 < n ? $0 + 1 : -1 }
        prev = (0..<n).map { $0 - 1 }
        alive = [Bool](repeating: true, count: n)
        self.before = { a, b in before(a.key, b.key) ?? (a.left < b.left) }
    }

    /// The live symbol after `i`, or nil.
    func right(of i: Int) -> Int? { next[i] >= 0 ? next[i] : nil }
    func left(of i: Int) -> Int? { prev[i] >= 0 ? prev[i] : nil }

    mutating func push(_ key: Key, left: Int) {
        heap.append(Candidate(key: key, left: left))
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard before(heap[i], heap[p]) else { break }
            heap.swapAt(i, p); i = p
        }
    }

    mutating func pop() -> Candidate? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && before(heap[l], heap[m]) { m = l }
                if r < heap.count && before(heap[r], heap[m]) { m = r }
                if m == i { break }
                heap.swapAt(i, m); i = m
            }
        }
        return top
    }

    func isAlive(_ i: Int) -> Bool { alive[i] }

    /// Joins symbol `i` with the one after it; returns `i`.
    mutating func merge(_ i: Int) {
        let r = next[i]
        symbols[i] += symbols[r]
        alive[r] = false
        next[i] = next[r]
        if next[r] >= 0 { prev[next[r]] = i }
    }

    /// The live symbols in order.
    var result: [String] {
        var out: [String] = []
        var i = symbols.isEmpty ? -1 : 0
        while i >= 0 { out.append(symbols[i]); i = next[i] }
        return out
    }
}
