import Foundation
import GraftTensor

/// Writes a GGUF v3 file: metadata, then tensor infos, then 32-byte-aligned tensor data (F32, F16 or BF16).
public struct GGUFWriter {
    public var metadata: [(String, GGUFValue)] = []
    var tensors: [(name: String, type: GGMLType, dims: [Int], data: Data)] = []

    public init() {}

    public mutating func set(_ key: String, _ value: GGUFValue) { metadata.append((key, value)) }

    /// Adds a float tensor in HF (row-major) shape, stored as `type` (.f32, .f16 or .bf16).
    public mutating func add(_ name: String, shape: [Int], values: FloatBuffer, type: GGMLType) throws {
        let dtype: DType
        switch type {
        case .f32: dtype = .f32
        case .f16: dtype = .f16
        case .bf16: dtype = .bf16
        default: throw FormatError(name, nil, "GGUF output type \(type.name) is not supported (F32, F16, BF16)")
        }
        let t = values.tensor(shape: shape, dtype: dtype)
        tensors.append((name, type, shape.reversed(), Data(t.bytes)))
    }

    public func write(to path: String) throws {
        var out = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: Array(s.utf8)) }
        func typeCode(_ v: GGUFValue) -> UInt32 {
            switch v {
            case .uint: return 4; case .int: return 5; case .float: return 6; case .bool: return 7
            case .string: return 8; case .array: return 9
            }
        }
        func value(_ v: GGUFValue) {
            switch v {
            case let .uint(u): u32(UInt32(truncatingIfNeeded: u))
            case let .int(i): u32(UInt32(bitPattern: Int32(truncatingIfNeeded: i)))
            case let .float(f): u32(Float(f).bitPattern)
            case let .bool(b): out.append(b ? 1 : 0)
            case let .string(s): str(s)
            case let .array(a):
                u32(a.first.map(typeCode) ?? 8); u64(UInt64(a.count))
                for e in a { value(e) }
            }
        }
        out.append(contentsOf: Array("GGUF".utf8))
        u32(3); u64(UInt64(tensors.count)); u64(UInt64(metadata.count))
        for (k, v) in metadata { str(k); u32(typeCode(v)); value(v) }
        var offset = 0
        for t in tensors {
            str(t.name); u32(UInt32(t.dims.count)); for d in t.dims { u64(UInt64(d)) }; u32(t.type.rawValue); u64(UInt64(offset))
            offset += (t.data.count + 31) / 32 * 32
        }
        while out.count % 32 != 0 { out.append(0) }
        for t in tensors {
            out.append(t.data)
            while out.count % 32 != 0 { out.append(0) }
        }
        try FileBytes.write(out, to: path)
    }
}
