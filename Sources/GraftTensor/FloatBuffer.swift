/// A flat float32 array with a stable address, cheap to pass between threads: either a zero-copy view
/// of an f32 tensor (memory-mapped or owned) or a fresh allocation. Compute kernels take and return these.
public struct FloatBuffer: @unchecked Sendable {
    public let storage: Storage
    public let count: Int
    private let base: UnsafeMutablePointer<Float>?

    /// A new, uninitialised buffer of `count` floats.
    public init(count: Int) {
        let s = Storage(allocating: count * 4)
        self.init(storage: s, count: count, base: s.mutableBytes.baseAddress?.assumingMemoryBound(to: Float.self))
    }

    private init(storage: Storage, count: Int, base: UnsafeMutablePointer<Float>?) {
        self.storage = storage
        self.count = count
        self.base = base
    }

    /// A new buffer of `count` copies of `value`.
    public init(repeating value: Float, count: Int) {
        self.init(count: count)
        mutable.update(repeating: value)
    }

    public init(_ values: [Float]) {
        self.init(count: values.count)
        _ = mutable.initialize(from: values)
    }

    /// The tensor's elements as float32: shared when the tensor already is 4-byte-aligned f32, converted otherwise.
    public init(_ tensor: Tensor) {
        precondition(tensor.dtype.isFloatingPoint, "FloatBuffer from a \(tensor.dtype) tensor")
        if tensor.dtype == .f32, let p = tensor.bytes.baseAddress, Int(bitPattern: p) % 4 == 0 {
            self.init(storage: tensor.storage, count: tensor.count,
                      base: UnsafeMutablePointer(mutating: p.assumingMemoryBound(to: Float.self)))
        } else {
            self.init(count: tensor.count)
            Convert.toF32(tensor.bytes, from: tensor.dtype, mutable)
        }
    }

    public var values: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: base, count: count) }
    /// Writable view. Only write to buffers you allocated (never to one viewing a mapped file).
    public var mutable: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: base, count: count) }
    public var array: [Float] { Array(values) }

    public subscript(i: Int) -> Float { values[i] }

    /// The data as a tensor of `dtype` with `shape` (a conversion unless dtype is f32).
    public func tensor(shape: [Int], dtype: DType = .f32) -> Tensor {
        precondition(shape.reduce(1, *) == count)
        if dtype == .f32 && storage.bytes.count == count * 4 && storage.bytes.baseAddress == UnsafeRawPointer(base) {
            return Tensor(dtype: .f32, shape: shape, storage: storage)
        }
        let s = Storage(allocating: count * dtype.byteSize)
        Convert.fromF32(values, to: dtype, s.mutableBytes)
        return Tensor(dtype: dtype, shape: shape, storage: s)
    }

    /// Index of the first NaN or infinity, if any.
    public func firstNonFinite() -> Int? {
        let v = values
        var i = 0
        let n = count
        let inf = SIMD16<UInt32>(repeating: 0x7F80_0000)
        while i + 16 <= n {
            let bits = UnsafeRawPointer(v.baseAddress! + i).loadUnaligned(as: SIMD16<UInt32>.self)
            if any((bits & inf) .== inf) { break }
            i += 16
        }
        while i < n { if !v[i].isFinite { return i }; i += 1 }
        return nil
    }
}
