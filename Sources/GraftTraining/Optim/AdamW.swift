import Foundation
import GraftTensor

/// A trainable tensor: its values (updated in place, shared with the model's layers) and gradient.
public struct TrainableParameter: @unchecked Sendable {
    /// The tensor's name in the saved adapter (PEFT naming).
    public let name: String
    public let value: FloatBuffer
    public let grad: FloatBuffer
    public let shape: [Int]
    /// Weight decay applies (not to biases or DoRA magnitudes, as HF Trainer's default grouping).
    public let decay: Bool

    public init(name: String, value: FloatBuffer, grad: FloatBuffer, shape: [Int], decay: Bool) {
        precondition(value.count == grad.count && value.count == shape.reduce(1, *))
        self.name = name; self.value = value; self.grad = grad; self.shape = shape; self.decay = decay
    }

    public func zeroGrad() { grad.mutable.update(repeating: 0) }
}

/// AdamW (Loshchilov & Hutter): Adam moments with bias correction and decoupled weight decay, as
/// `torch.optim.AdamW`: θ ← θ − lr·λ·θ; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
/// θ ← θ − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε).
///
/// Elements a method switches on mid-run (IncreLoRA's new ranks) start fresh, as a new torch
/// parameter group would: `restart` zeroes their moments and records the step they were born at, so
/// their t counts from there and their learning rate is the schedule's for their own age.
public final class AdamW: @unchecked Sendable {
    public var beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
    public var weightDecay: Float
    /// Steps taken (t in the bias corrections).
    public private(set) var step = 0
    /// First and second moments per parameter, in parameter order.
    public private(set) var m: [FloatBuffer], v: [FloatBuffer]
    /// Per parameter, the step each element was born at (nil: every element at 0, the common case).
    public private(set) var births: [[Int32]?]
    let params: [TrainableParameter]

    public init(_ params: [TrainableParameter], weightDecay: Float) {
        self.params = params; self.weightDecay = weightDecay
        m = params.map { FloatBuffer(repeating: 0, count: $0.value.count) }
        v = params.map { FloatBuffer(repeating: 0, count: $0.value.count) }
        births = params.map { _ in nil }
    }

    /// Restores moments, births and step count from a checkpoint.
    public func restore(step: Int, m: [FloatBuffer], v: [FloatBuffer], births: [[Int32]?]? = nil) throws {
        let births = births ?? params.map { _ in nil }
        guard m.count == params.count, v.count == params.count, births.count == params.count,
              zip(params, zip(m, v)).allSatisfy({ $0.value.count == $1.0.count && $0.value.count == $1.1.count }),
              zip(params, births).allSatisfy({ $1 == nil || $1!.count == $0.value.count }) else {
            throw TrainingError("optimizer state does not match the adapter's parameters")
        }
        self.step = step; self.m = m; self.v = v; self.births = births
    }

    /// Elements `ranges` of parameter `index` start now: zero moments, t counted from this step.
    public func restart(_ index: Int, ranges: [Range<Int>]) {
        var b = births[index] ?? [Int32](repeating: 0, count: params[index].value.count)
        let mm = m[index].mutable, vv = v[index].mutable
        for r in ranges { for j in r { b[j] = Int32(step); mm[j] = 0; vv[j] = 0 } }
        births[index] = b
    }

    public func update(lr: Float) { update { _ in lr } }

    /// One step; `lr(birth)` is the learning rate of elements born at step `birth` (0 for most).
    public func update(lr: (Int) -> Float) {
        step += 1
        let b1 = beta1, b2 = beta2, eps = eps
        /// lr / (1 − β₁ᵗ), √(1 − β₂ᵗ) and the decay factor for elements of age t born at `birth`.
        func factors(birth: Int, decays: Bool) -> (stepSize: Float, c2s: Float, decay: Float) {
            let t = Double(step - birth), rate = lr(birth)
            let c1 = 1 - Float(pow(Double(b1), t)), c2 = 1 - Float(pow(Double(b2), t))
            return (rate / c1, c2.squareRoot(), decays ? 1 - rate * weightDecay : 1)
        }
        for (i, p) in params.enumerated() {
            let x = p.value.mutable, g = p.grad.values, mm = m[i].mutable, vv = v[i].mutable
            if let born = births[i] {
                // Few elements, few distinct births: the factors per birth, computed once.
                var table: [Int32: (Float, Float, Float)] = [:]
                for j in 0..<x.count {
                    let f: (Float, Float, Float)
                    if let cached = table[born[j]] { f = cached } else { f = factors(birth: Int(born[j]), decays: p.decay); table[born[j]] = f }
                    let gj = g[j]
                    mm[j] = b1 * mm[j] + (1 - b1) * gj
                    vv[j] = b2 * vv[j] + (1 - b2) * gj * gj
                    x[j] = x[j] * f.2 - f.0 * mm[j] / (vv[j].squareRoot() / f.1 + eps)
                }
                continue
            }
            let (stepSize, c2s, decay) = factors(birth: 0, decays: p.decay)
            parallelFor(count: x.count, minChunk: 1 << 15) { r in
                for j in r {
                    let gj = g[j]
                    mm[j] = b1 * mm[j] + (1 - b1) * gj
                    vv[j] = b2 * vv[j] + (1 - b2) * gj * gj
                    x[j] = x[j] * decay - stepSize * mm[j] / (vv[j].squareRoot() / c2s + eps)
                }
            }
        }
    }
}

/// Scales all gradients so their global L2 norm is at most `maxNorm` (torch.nn.utils.clip_grad_norm_);
/// returns the norm before clipping.
@discardableResult
public func clipGradients(_ params: [TrainableParameter], maxNorm: Float?) -> Float {
    var ss = 0.0
    for p in params { for g in p.grad.values { ss += Double(g) * Double(g) } }
    let norm = Float(ss.squareRoot())
    if let maxNorm, maxNorm > 0, norm > maxNorm {
        let f = maxNorm / (norm + 1e-6)
        for p in params { let g = p.grad.mutable; for j in 0..<g.count { g[j] *= f } }
    }
    return norm
}

public struct TrainingError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
