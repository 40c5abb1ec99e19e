/// Conversions between the float storage types, vectorised (F16C with `-target-cpu native`).
public enum Convert {
    /// Converts `count(dst)` elements stored as `dtype` in `src` to float32.
    public static func toF32(_ src: UnsafeRawBufferPointer, from dtype: DType, _ dst: UnsafeMutableBufferPointer<Float>) {
        let n = dst.count
        guard n > 0, let d = dst.baseAddress, let s = src.baseAddress else { return }
        precondition(src.count >= n * dtype.byteSize)
        switch dtype {
        case .f32:
            UnsafeMutableRawPointer(d).copyMemory(from: s, byteCount: n * 4)
        case .f16:
            parallelFor(count: n, minChunk: 1 << 18) { r in
                var i = r.lowerBound
                while i + 16 <= r.upperBound {
                    let v = s.loadUnaligned(fromByteOffset: i * 2, as: SIMD16<Float16>.self)
                    (UnsafeMutableRawPointer(d) + i * 4).storeBytes(of: SIMD16<Float>(v), as: SIMD16<Float>.self)
                    i += 16
                }
                while i < r.upperBound { d[i] = Float(s.loadUnaligned(fromByteOffset: i * 2, as: Float16.self)); i += 1 }
            }
        case .bf16:
            parallelFor(count: n, minChunk: 1 << 18) { r in
                var i = r.lowerBound
                while i + 16 <= r.upperBound {
                    let v = SIMD16<UInt32>(truncatingIfNeeded: s.loadUnaligned(fromByteOffset: i * 2, as: SIMD16<UInt16>.self))
                    (UnsafeMutableRawPointer(d) + i * 4).storeBytes(of: unsafeBitCast(v &<< 16, to: SIMD16<Float>.self), as: SIMD16<Float>.self)
                    i += 16
                }
                while i < r.upperBound {
                    d[i] = Float(bitPattern: UInt32(s.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16); i += 1
                }
            }
        case .f64:
            for i in 0..<n { d[i] = Float(s.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) }
        default:
            preconditionFailure("toF32 from non-float dtype \(dtype)")
        }
    }

    /// Converts float32 `src` into `dst` stored as `dtype`, rounding to nearest even.
    public static func fromF32(_ src: UnsafeBufferPointer<Float>, to dtype: DType, _ dst: UnsafeMutableRawBufferPointer) {
        let n = src.count
        guard n > 0, let s = src.baseAddress, let d = dst.baseAddress else { return }
        precondition(dst.count >= n * dtype.byteSize)
        switch dtype {
        case .f32:
            d.copyMemory(from: s, byteCount: n * 4)
        case .f16:
            parallelFor(count: n, minChunk: 1 << 18) { r in
                var i = r.lowerBound
                while i + 16 <= r.upperBound {
                    let v = UnsafeRawPointer(s + i).loadUnaligned(as: SIMD16<Float>.self)
                    (d + i * 2).storeBytes(of: SIMD16<Float16>(v), as: SIMD16<Float16>.self)
                    i += 16
                }
                while i < r.upperBound { (d + i * 2).storeBytes(of: Float16(s[i]), as: Float16.self); i += 1 }
            }
        case .bf16:
            parallelFor(count: n, minChunk: 1 << 18) { r in
                for i in r { (d + i * 2).storeBytes(of: bf16Bits(s[i]), as: UInt16.self) }
            }
        case .f64:
            for i in 0..<n { (d + i * 8).storeBytes(of: Double(s[i]), as: Double.self) }
        default:
            preconditionFailure("fromF32 to non-float dtype \(dtype)")
        }
    }

    /// float32 → bfloat16 bits with round-to-nearest-even; NaN stays a quiet NaN.
    @inline(__always)
    public static func bf16Bits(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: (b >> 16) | 0x40) }
        let rounded = b &+ 0x7FFF &+ ((b >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }
}
