/// An n-dimensional array: a dtype, a row-major shape and the bytes in a `Storage`.
/// Tensors are values; the storage they share is immutable once built.
public struct Tensor: Sendable {
    public let dtype: DType
    public let shape: [Int]
    public let storage: Storage

    public init(dtype: DType, shape: [Int], storage: Storage) {
        precondition(storage.bytes.count == shape.reduce(1, *) * dtype.byteSize, "storage size mismatch")
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    /// A float32 tensor holding a copy of `values`.
    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        let s = Storage(allocating: values.count * 4)
        values.withUnsafeBytes { s.mutableBytes.copyMemory(from: $0) }
        self.init(dtype: .f32, shape: shape, storage: s)
    }

    /// A tensor of `dtype` made from float32 values, converted (with rounding to nearest even).
    public init(shape: [Int], values: [Float], dtype: DType) {
        precondition(dtype.isFloatingPoint)
        let s = Storage(allocating: values.count * dtype.byteSize)
        values.withUnsafeBufferPointer { Convert.fromF32($0, to: dtype, s.mutableBytes) }
        self.init(dtype: dtype, shape: shape, storage: s)
    }

    public var count: Int { shape.reduce(1, *) }
    public var byteCount: Int { storage.bytes.count }
    public var bytes: UnsafeRawBufferPointer { storage.bytes }

    /// The elements as float32 (a conversion for f16/bf16/f64, a copy for f32).
    public func floats() -> [Float] {
        precondition(dtype.isFloatingPoint, "floats() on a \(dtype) tensor")
        return [Float](unsafeUninitializedCapacity: count) { buf, n in
            Convert.toF32(bytes, from: dtype, UnsafeMutableBufferPointer(rebasing: buf[0..<count]))
            n = count
        }
    }

    /// This tensor converted to `dtype` (floating types only); `self` when it already is.
    public func converted(to target: DType) -> Tensor {
        if target == dtype { return self }
        return Tensor(shape: shape, values: floats(), dtype: target)
    }
}
