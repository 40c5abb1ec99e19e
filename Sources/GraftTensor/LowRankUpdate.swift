/// A low-rank update added to a linear layer's output without folding it into W:
/// y += scale · (x·Aᵀ)·Bᵀ, A [rank × in], B [out × rank] (LoRA's layout). With a `magnitude` vector it is
/// DoRA's update: y = m/‖W + scale·B·A‖ ⊙ (x·Wᵀ + scale·(x·Aᵀ)·Bᵀ) + bias, the row norms treated as
/// constants in the backward pass (DoRA §4.3, as PEFT does).
public struct LowRankUpdate: Sendable {
    public let a: FloatBuffer
    public let b: FloatBuffer
    public let rank: Int
    public let scale: Float
    /// DoRA's per-output magnitude m [out], when the update is a DoRA one.
    public let magnitude: FloatBuffer?

    public init(a: FloatBuffer, b: FloatBuffer, rank: Int, scale: Float, magnitude: FloatBuffer? = nil) {
        self.a = a; self.b = b; self.rank = rank; self.scale = scale; self.magnitude = magnitude
    }
}
