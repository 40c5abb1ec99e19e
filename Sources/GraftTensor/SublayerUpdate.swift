/// The third adapter seam: what a method adds where a transformer sublayer's output meets its residual
/// (bottleneck adapters, serial or parallel). Each layer has two such sites; the models call the update
/// attached there in all their passes, so a method of this kind is written once for every model.

/// Where in a layer: after attention, or after the feed-forward block.
public enum Sublayer: String, Sendable, CaseIterable { case attention, feedForward }

/// The sublayer's own normalisation as an update sees it (BERT's post-sum LayerNorm), frozen: forward
/// and backward with what backward needs. Llama's sublayers end in a plain residual add: no norm.
public struct FrozenNorm {
    private let forwardFn: (FloatBuffer, Int) -> (FloatBuffer, AnyObject)
    private let backwardFn: (FloatBuffer, AnyObject, Int) -> FloatBuffer

    public init(forward: @escaping (FloatBuffer, Int) -> (FloatBuffer, AnyObject), backward: @escaping (FloatBuffer, AnyObject, Int) -> FloatBuffer) {
        forwardFn = forward; backwardFn = backward
    }

    public func forward(_ x: FloatBuffer, rows: Int) -> (y: FloatBuffer, saved: AnyObject) { forwardFn(x, rows) }
    public func backward(_ dy: FloatBuffer, saved: AnyObject, rows: Int) -> FloatBuffer { backwardFn(dy, saved, rows) }
}

/// What a method adds at one sublayer site: a term added to h + r, h [rows × hidden] the sublayer's
/// output (after its dropout) and r its residual input, before the sublayer's norm (BERT) or into the
/// residual stream (Llama). The update reads h and r and must not keep them (the model sums into h).
public protocol SublayerUpdate: AnyObject, Sendable {
    /// The method's name in GraftAdapters' registry.
    var method: String { get }
    /// The update's tensors (with gradient buffers once `makeTrainable` ran), named as its file names them.
    var parameters: [UpdateParameter] { get }
    func makeTrainable()
    /// The term for h and r; `saved` is what `backward` needs (nil when `keep` is false: inference).
    func forward(h: FloatBuffer, residual r: FloatBuffer, rows: Int, norm: FrozenNorm?, keep: Bool) -> (term: FloatBuffer, saved: AnyObject?)
    /// From dL/d(term): adds the parameters' gradients (when they train) and returns the term's parts of
    /// dL/dh and dL/dr (nil where the term does not depend on it).
    func backward(_ dTerm: FloatBuffer, saved: AnyObject?, rows: Int, norm: FrozenNorm?) -> (dh: FloatBuffer?, dr: FloatBuffer?)
}

/// The sublayer updates attached to a model, by layer and site.
public struct SublayerUpdates: @unchecked Sendable {
    public private(set) var sites: [Int: [Sublayer: any SublayerUpdate]] = [:]
    public init() {}
    public var isEmpty: Bool { sites.isEmpty }
    public subscript(layer: Int, site: Sublayer) -> (any SublayerUpdate)? { sites[layer]?[site] }
    public mutating func set(_ update: (any SublayerUpdate)?, layer: Int, site: Sublayer) {
        sites[layer, default: [:]][site] = update
        if sites[layer]?.isEmpty == true { sites[layer] = nil }
    }
    /// Whether any attached update trains (its gradients are wanted).
    public var isTraining: Bool { sites.values.contains { $0.values.contains { $0.parameters.contains { $0.gradient != nil } } } }
    public func trains(layer: Int) -> Bool { sites[layer]?.values.contains { $0.parameters.contains { $0.gradient != nil } } ?? false }
}
