/// The adapter seam: what an adapter method adds to one linear layer y = x·Wᵀ + b.
///
/// Models hold the updates attached to each linear layer and call them; each method's layer math
/// (forward and backward side by side) lives in its folder in GraftAdapters and implements
/// `LayerUpdate`. The protocol sits here, below both, so that neither Models nor Adapters depends on
/// the other (and Merging, which reads adapters, never pulls in model code).

/// The frozen layer underneath an update, as the model runs it (its packed products, padding rows
/// skipped): an update's forward and backward call `forward` and `inputGradient` instead of
/// multiplying by W themselves, so every method gets the model's fastest products.
public struct FrozenLinear {
    /// W [out × in], as PyTorch stores it, and the bias [out].
    public let weight: FloatBuffer
    public let bias: FloatBuffer?
    public let inFeatures: Int, outFeatures: Int
    private let product: (FloatBuffer, Int) -> FloatBuffer
    private let inputProduct: (FloatBuffer, Int) -> FloatBuffer

    /// `product(x, rows)` gives x·Wᵀ + b [rows × out]; `inputProduct(dy, rows)` gives dy·W [rows × in].
    public init(weight: FloatBuffer, bias: FloatBuffer?, inFeatures: Int, outFeatures: Int,
                product: @escaping (FloatBuffer, Int) -> FloatBuffer, inputProduct: @escaping (FloatBuffer, Int) -> FloatBuffer) {
        self.weight = weight; self.bias = bias; self.inFeatures = inFeatures; self.outFeatures = outFeatures
        self.product = product; self.inputProduct = inputProduct
    }

    /// x·Wᵀ + b: x [rows × in] → [rows × out].
    public func forward(_ x: FloatBuffer, rows: Int) -> FloatBuffer { product(x, rows) }

    /// dy·W: dy [rows × out] → [rows × in] (the frozen layer's input gradient).
    public func inputGradient(_ dy: FloatBuffer, rows: Int) -> FloatBuffer { inputProduct(dy, rows) }
}

/// One tensor of an update: its value (shared with the optimizer, which updates it in place), its
/// gradient buffer while it trains, the suffix PEFT puts after the module path in the adapter file
/// (`lora_A.weight`, `ia3_l`) and its shape there.
public struct UpdateParameter: @unchecked Sendable {
    public let suffix: String
    public let value: FloatBuffer
    public let gradient: FloatBuffer?
    public let shape: [Int]
    /// Whether AdamW's weight decay applies (PEFT's trainers decay matrices, not magnitude or scaling vectors).
    public let decay: Bool

    public init(suffix: String, value: FloatBuffer, gradient: FloatBuffer?, shape: [Int], decay: Bool) {
        self.suffix = suffix; self.value = value; self.gradient = gradient; self.shape = shape; self.decay = decay
    }
}

/// What an adapter method adds to one linear layer: LoRA's y += s·(x·Aᵀ)·Bᵀ, DoRA's rescaled weight,
/// IA³'s scaling of the output or the input, …. One instance per layer.
///
/// An update computes the whole layer's output from the frozen layer beneath it (`FrozenLinear`), so a
/// method may add to the product (LoRA), scale it (IA³) or rescale it (DoRA). `backward` accumulates
/// the update's own gradients (when it trains) and returns the layer's input gradient, the frozen
/// part's included.
public protocol LayerUpdate: AnyObject, Sendable {
    /// The method's name in GraftAdapters' registry (`lora`, `dora`, `ia3`).
    var method: String { get }
    /// Fits the update to a layer of that shape when it is attached: nil when it fits (a method whose
    /// modules share tensors — VeRA — takes its slice of them here), else why not (an adapter for another base).
    func fit(module: String, inFeatures: Int, outFeatures: Int) -> String?
    /// The update's tensors (with gradient buffers once `makeTrainable` ran).
    var parameters: [UpdateParameter] { get }
    /// Allocates zeroed gradient buffers: from now on `backward` accumulates into them.
    func makeTrainable()
    /// The layer's output with the update, for x [rows × in]; `rng` draws training-time randomness
    /// (dropout; nil: none, as at inference). `saved` is what `backward` needs.
    func forward(_ x: FloatBuffer, rows: Int, base: FrozenLinear, rng: UnsafeMutablePointer<SeededRNG>?) -> (y: FloatBuffer, saved: AnyObject?)
    /// Backward of `forward`: adds the update's parameter gradients (if it trains) and returns dL/dx
    /// [rows × in] when `needInput` (nil otherwise).
    func backward(_ dy: FloatBuffer, x: FloatBuffer, saved: AnyObject?, rows: Int, base: FrozenLinear, needInput: Bool) -> FloatBuffer?
}

extension LayerUpdate {
    /// Whether `backward` accumulates gradients.
    public var isTraining: Bool { parameters.contains { $0.gradient != nil } }
}
