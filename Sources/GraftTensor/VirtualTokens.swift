/// The second adapter seam, for methods that add to the sequence rather than to a linear layer: learned
/// vectors the model reads as if they came before the first token.
///
/// - `.embeddings` (prompt tuning, PEFT `PROMPT_TUNING`): `count` input embeddings [count × hidden] put
///   ahead of the tokens' embeddings. They take positions 0..<count and the tokens follow them.
/// - `.keysValues` (prefix tuning, PEFT `PREFIX_TUNING`): in every layer, `count` keys and values put
///   ahead of the tokens' keys and values, every token attending to all of them. A row holds, for each
///   layer i, its key then its value ([layers × 2 × kvWidth], PEFT's `past_key_values` layout); keys are
///   used as stored (no rotary rotation). The tokens' positions start at `count`, as after a KV cache of
///   that length.
///
/// A prompt may also carry `offsets`: rows added to the input embeddings of the tokens that follow it,
/// row j to the j-th token of every sequence (DePT's and EPT's low-rank update of the input embeddings;
/// tokens past the last row get none). And its rows may be derived (`source`): computed from a method's
/// own parameters before each pass (`prepare`), their gradient handed back to them after each backward
/// (`finishBackward`) — EPT's fused, projected prompt.
///
/// The models hold one `VirtualTokens` (`AdaptableModel.virtualTokens`) and call it in every pass; a
/// method's folder in GraftAdapters makes it. It lives here, below both, like `LayerUpdate`.
public final class VirtualTokens: @unchecked Sendable {
    public enum Placement: String, Sendable {
        case embeddings, keysValues
    }

    /// The widths a model gives its virtual tokens.
    public struct Layout: Sendable, Equatable {
        public let hidden: Int, layers: Int, heads: Int
        /// Keys' (and values') width per position: kv heads × head size.
        public let kvWidth: Int
        /// Key/value heads (PEFT's `num_attention_heads` for a prefix).
        public let kvHeads: Int
        /// Positions the model can take, virtual tokens included.
        public let contextLength: Int
        /// Rows of the word-embedding table.
        public let vocabulary: Int

        public init(hidden: Int, layers: Int, heads: Int, kvWidth: Int, kvHeads: Int, contextLength: Int, vocabulary: Int) {
            self.hidden = hidden; self.layers = layers; self.heads = heads; self.kvWidth = kvWidth; self.kvHeads = kvHeads
            self.contextLength = contextLength; self.vocabulary = vocabulary
        }

        /// A row's width for a placement.
        public func width(_ placement: Placement) -> Int { placement == .embeddings ? hidden : layers * 2 * kvWidth }
    }

    public let placement: Placement
    public let count: Int, width: Int
    /// [count × width], updated in place by the optimizer.
    public let values: FloatBuffer
    /// Accumulated dL/dvalues while training (nil until `makeTrainable`).
    public private(set) var gradient: FloatBuffer?

    /// Rows added to the tokens' input embeddings [offsetRows × width] (`.embeddings` only), and their
    /// accumulated gradient while training.
    public let offsets: FloatBuffer?
    public private(set) var offsetGradient: FloatBuffer?
    /// The method that derives `values` and `offsets` from its own parameters, if they are derived.
    public let source: (any VirtualTokenSource)?

    public init(placement: Placement, count: Int, width: Int, values: FloatBuffer, offsets: FloatBuffer? = nil,
                source: (any VirtualTokenSource)? = nil) {
        precondition(count > 0 && values.count == count * width)
        precondition(offsets == nil || (placement == .embeddings && offsets!.count % width == 0))
        self.placement = placement; self.count = count; self.width = width; self.values = values
        self.offsets = offsets; self.source = source
        source?.derive(into: self)
    }

    /// Rows of `offsets` (0 without): the tokens that get one.
    public var offsetRows: Int { (offsets?.count ?? 0) / width }

    /// Allocates the zeroed gradients: from now on the models' backward passes accumulate into them.
    public func makeTrainable() {
        if gradient == nil { gradient = FloatBuffer(repeating: 0, count: values.count) }
        if let offsets, offsetGradient == nil { offsetGradient = FloatBuffer(repeating: 0, count: offsets.count) }
    }

    /// Before a pass: derived rows are computed again from their source's parameters (which the
    /// optimizer may have moved) while training.
    public func prepare() { if isTraining, let source { source.derive(into: self) } }

    /// After a backward pass: derived rows hand their gradients to the source's parameters, and start again from zero.
    public func finishBackward() {
        guard let source, let gradient else { return }
        source.backward(self)
        gradient.mutable.update(repeating: 0)
        offsetGradient?.mutable.update(repeating: 0)
    }

    /// Adds the offsets to the `n` consecutive token rows at `x` (`width` floats each): row j gets offset
    /// row `first` + j, `first` being the index of the first of them among the sequence's tokens.
    public func addOffsets(to x: UnsafeMutablePointer<Float>, tokens n: Int, first: Int = 0) {
        guard let offsets else { return }
        let o = offsets.values.baseAddress!
        for j in 0..<n where first + j < offsetRows {
            let dst = x + j * width, src = o + (first + j) * width
            for c in 0..<width { dst[c] += src[c] }
        }
    }

    /// Adds the input-embedding gradient of `n` token rows at `dx` to the offsets' gradient.
    public func accumulateOffsets(from dx: UnsafePointer<Float>, tokens n: Int) {
        guard let g = offsetGradient else { return }
        let gp = g.mutable.baseAddress!
        for j in 0..<min(n, offsetRows) {
            let dst = gp + j * width, src = dx + j * width
            for c in 0..<width { dst[c] += src[c] }
        }
    }

    public var isTraining: Bool { gradient != nil }

    /// Why these tokens do not fit a model of `layout` (nil when they do).
    public func mismatch(_ layout: Layout) -> String? {
        let expected = layout.width(placement)
        if width != expected {
            return placement == .embeddings
                ? "its \(count) virtual tokens are \(width) wide but the model's embeddings are \(expected)"
                : "its prefix rows are \(width) wide but the model needs \(expected) (\(layout.layers) layers × key and value × \(layout.kvWidth))"
        }
        if count >= layout.contextLength {
            return "its \(count) virtual tokens fill the model's context of \(layout.contextLength) positions"
        }
        return nil
    }

    /// Layer `layer`'s prefix keys (`value: false`) or values: the first of `count` rows `width` apart, each `kvWidth` wide.
    public func keysValues(layer: Int, value: Bool, kvWidth: Int) -> UnsafePointer<Float> {
        values.values.baseAddress! + (2 * layer + (value ? 1 : 0)) * kvWidth
    }

    /// Adds a [count × kvWidth] gradient into layer `layer`'s key (or value) columns of `gradient`.
    public func accumulate(layer: Int, value: Bool, kvWidth: Int, _ g: FloatBuffer) {
        guard let gradient else { return }
        let dst = gradient.mutable.baseAddress! + (2 * layer + (value ? 1 : 0)) * kvWidth, src = g.values.baseAddress!
        for r in 0..<count { for j in 0..<kvWidth { dst[r * width + j] += src[r * kvWidth + j] } }
    }
}

/// A method whose virtual tokens are computed from its own parameters (EPT): `derive` writes the
/// tokens' `values` (and `offsets`), `backward` turns their gradients into its parameters' gradients.
public protocol VirtualTokenSource: AnyObject, Sendable {
    /// Its trainable tensors (suffix = the saved name), gradients allocated once training starts.
    var parameters: [UpdateParameter] { get }
    func makeTrainable()
    func derive(into tokens: VirtualTokens)
    func backward(_ tokens: VirtualTokens)
}
