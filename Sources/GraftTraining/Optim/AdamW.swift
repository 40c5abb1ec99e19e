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
public final class AdamW: @unchecked Sendable {
    public var beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
    public var weightDecay: Float
    /// Steps taken (t in the bias corrections).
    public private(set) var step = 0
    /// First and second moments per parameter, in parameter order.
    public private(set) var m: [FloatBuffer], v: [FloatBuffer]
    let params: [TrainableParameter]

    public init(_ params: [TrainableParameter], weightDecay: Float) {
        self.params = params; self.weightDecay = weightDecay
        m = params.map { FloatBuffer(repeating: 0, count: $0.value.count) }
        v = params.map { FloatBuffer(repeating: 0, count: $0.value.count) }
    }

    /// Restores moments and step count from a checkpoint.
    public func restore(step: Int, m: [FloatBuffer], v: [FloatBuffer]) throws {
        guard m.count == params.count, v.count == params.count,
              zip(params, zip(m, v)).allSatisfy({ $0.value.count == $1.0.count && $0.value.count == $1.1.count }) else {
            throw TrainingError("optimizer state does not match the adapter's parameters")
        }
        self.step = step; self.m = m; self.v = v
    }

    public func update(lr: Float) {
        step += 1
        let b1 = beta1, b2 = beta2, eps = eps
        let c1 = 1 - Float(pow(Double(b1), Double(step))), c2 = 1 - Float(pow(Double(b2), Double(step)))
        for (i, p) in params.enumerated() {
            let x = p.value.mutable, g = p.grad.values, mm = m[i].mutable, vv = v[i].mutable
            let decay = p.decay ? 1 - lr * weightDecay : 1
            let stepSize = lr / c1, c2s = c2.squareRoot()
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
