/// A low-rank update added to a linear layer's output without folding it into W:
/// y += scale · (x·Aᵀ)·Bᵀ, A [rank × in], B [out × rank] (LoRA's layout).
public struct LowRankUpdate: Sendable {
    public let a: FloatBuffer
    public let b: FloatBuffer
    public let rank: Int
    public let scale: Float

    public init(a: FloatBuffer, b: FloatBuffer, rank: Int, scale: Float) {
        self.a = a; self.b = b; self.rank = rank; self.scale = scale
    }
}
