import Foundation
import GraftTensor

/// Losses and their gradients.
public enum Loss {
    /// The index of each row's largest logit (the first on ties): the predicted classes.
    public static func argmax(_ logits: FloatBuffer, classes: Int) -> [Int] {
        let v = logits.values
        return (0..<(logits.count / classes)).map { r in
            var best = 0
            for j in 1..<classes where v[r * classes + j] > v[r * classes + best] { best = j }
            return best
        }
    }

    /// Mean softmax cross-entropy over the rows of `logits` [rows × classes] whose target is not nil,
    /// as PyTorch's `cross_entropy` (ignore_index rows excluded from the mean). Returns the loss summed
    /// over counted rows, the count, and dL/dlogits for L = sum · `gradScale` (default 1/count: the mean).
    public static func crossEntropy(_ logits: FloatBuffer, classes: Int, targets: [Int?], gradScale: Float? = nil)
        -> (sum: Double, count: Int, grad: FloatBuffer) {
        let rows = targets.count
        let grad = FloatBuffer(repeating: 0, count: rows * classes)
        let count = targets.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
        let gs = gradScale ?? 1 / Float(max(1, count))
        var losses = [Double](repeating: 0, count: rows)
        let lv = logits.values, gv = grad.mutable
        losses.withUnsafeMutableBufferPointer { lp in
            let out = UncheckedSendable(lp)
            parallelFor(count: rows, minChunk: 4) { rr in
                for r in rr {
                    guard let y = targets[r] else { continue }
                    let row = lv.baseAddress! + r * classes, g = gv.baseAddress! + r * classes
                    var m = -Float.infinity
                    for j in 0..<classes where row[j] > m { m = row[j] }
                    var sum: Double = 0
                    var j = 0
                    var acc = SIMD16<Float>(repeating: 0)
                    while j + 16 <= classes {
                        let e = Activation.exp16(UnsafeRawPointer(row + j).loadUnaligned(as: SIMD16<Float>.self) - m)
                        UnsafeMutableRawPointer(g + j).storeBytes(of: e, as: SIMD16<Float>.self)
                        acc += e
                        j += 16
                    }
                    sum = Double(acc.sum())
                    while j < classes { let e = exp(row[j] - m); g[j] = e; sum += Double(e); j += 1 }
                    out.value[r] = log(sum) + Double(m) - Double(row[y])
                    let inv = Float(1 / sum) * gs
                    for j in 0..<classes { g[j] *= inv }
                    g[y] -= gs
                }
            }
        }
        return (losses.reduce(0, +), count, grad)
    }
}
