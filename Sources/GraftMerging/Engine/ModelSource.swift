import Foundation
import GraftAdapters
import GraftFormats
import GraftTensor

/// One model a merge reads: a checkpoint, optionally with an adapter (any method that folds: LoRA,
/// DoRA, IA³) applied on the fly to the tensors it targets (mergekit's `model+adapter`). Tensors are read lazily through the memory map
/// and their pages released after use, so reading a model costs no more memory than its largest tensor.
public final class ModelSource: @unchecked Sendable {
    public let reference: ModelReference
    public let checkpoint: Checkpoint
    public let adapter: (any LoadedAdapter)?
    private let saved: [String: Tensor]
    /// Tensor name → how the adapter changes it.
    private let targets: [String: TensorFold]

    public init(_ reference: ModelReference) throws {
        self.reference = reference
        checkpoint = try Checkpoint(path: reference.path)
        if let a = reference.adapter {
            let adapter = try AdapterMethods.open(a)
            self.adapter = adapter
            // Fail now, not halfway through the merge, when the adapter does not fit this model.
            targets = try adapter.folds(in: checkpoint)
            var s: [String: Tensor] = [:]
            for (n, t) in adapter.savedTensors where checkpoint.info(n) != nil { s[n] = t }
            saved = s
        } else {
            adapter = nil
            targets = [:]
            saved = [:]
        }
    }

    public var names: [String] { checkpoint.names }
    public func info(_ name: String) -> TensorInfo? { checkpoint.info(name) }

    /// The tensor as float32, with the adapter's update or saved replacement applied.
    public func floats(_ name: String) throws -> FloatBuffer {
        if let t = saved[name] { return FloatBuffer(t) }
        let w = FloatBuffer(try checkpoint.tensor(name))
        guard let fold = targets[name] else { return w }
        return fold(w)
    }

    public func tensor(_ name: String) throws -> Tensor { try checkpoint.tensor(name) }

    /// Whether this source's tensor `name` is `other`'s unchanged: read from the same file and left
    /// alone by both sources' adapters (the usual case for a LoRA merge: every tensor the adapters
    /// do not target).
    public func sharesTensor(_ name: String, with other: ModelSource) -> Bool {
        guard saved[name] == nil, targets[name] == nil, other.saved[name] == nil, other.targets[name] == nil,
              let mine = checkpoint.file(of: name), let theirs = other.checkpoint.file(of: name) else { return false }
        return mine === theirs || (mine.path as NSString).standardizingPath == (theirs.path as NSString).standardizingPath
    }

    public func release(_ name: String) { checkpoint.releasePages(name) }
}
