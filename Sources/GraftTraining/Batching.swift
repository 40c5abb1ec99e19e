import GraftData
import GraftTensor

/// Batches for one epoch: the examples shuffled with (seed, epoch); with `bucketed` (group by length),
/// windows of 50 batches are sorted by length so a batch holds similar lengths (little padding) and the
/// batch order is shuffled again. The same seed gives the same batches on every run, which is what makes
/// resuming exact.
public enum Batching {
    public static func epoch(_ epoch: Int, lengths: [Int], batchSize: Int, seed: UInt64, bucketed: Bool = true) -> [[Int]] {
        var order = Array(lengths.indices)
        var rng = SeededRNG(seed: seed, key: "epoch/\(epoch)")
        Split.shuffle(&order, &rng)
        if bucketed {
            let window = batchSize * 50
            var start = 0
            while start < order.count {
                let end = min(order.count, start + window)
                order[start..<end].sort { (lengths[$0], $0) < (lengths[$1], $1) }
                start = end
            }
        }
        var batches = stride(from: 0, to: order.count, by: batchSize).map { Array(order[$0..<min(order.count, $0 + batchSize)]) }
        if bucketed { Split.shuffle(&batches, &rng) }
        return batches
    }
}
