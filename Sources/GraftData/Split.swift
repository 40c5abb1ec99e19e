import GraftTensor

/// Seeded train/validation/test splits.
public enum Split {
    /// Shuffles indices 0..<count with `seed` and cuts off `validation` and `test` fractions (each at
    /// least one item when its fraction is positive and there are enough items). When `strata` is given
    /// (a class per item) each class is split in the same proportions.
    public static func indices(count: Int, validation: Double, test: Double, seed: UInt64, strata: [String]? = nil)
        -> (train: [Int], validation: [Int], test: [Int]) {
        var groups: [[Int]]
        if let strata {
            var byClass: [String: [Int]] = [:]
            for (i, c) in strata.enumerated() { byClass[c, default: []].append(i) }
            groups = byClass.keys.sorted().map { byClass[$0]! }
        } else {
            groups = [Array(0..<count)]
        }
        var rng = SeededRNG(seed: seed, key: "split")
        var train: [Int] = [], val: [Int] = [], tst: [Int] = []
        for var g in groups {
            shuffle(&g, &rng)
            let nt = test > 0 ? max(1, Int((Double(g.count) * test).rounded())) : 0
            let nv = validation > 0 ? max(1, Int((Double(g.count) * validation).rounded())) : 0
            guard nt + nv < g.count else { train += g; continue }
            tst += g[0..<nt]; val += g[nt..<(nt + nv)]; train += g[(nt + nv)...]
        }
        return (train.sorted(), val.sorted(), tst.sorted())
    }

    /// Fisher–Yates with a seeded generator (the same order on every platform).
    public static func shuffle<T>(_ a: inout [T], _ rng: inout SeededRNG) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            let j = Int(rng.next() % UInt64(i + 1))
            a.swapAt(i, j)
        }
    }
}
