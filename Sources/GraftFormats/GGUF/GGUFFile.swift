import Foundation
import GraftTensor

/// A metadata value of a GGUF file.
public indirect enum GGUFValue: Sendable {
    case uint(UInt64), int(Int64), float(Double), bool(Bool), string(String), array([GGUFValue])

    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var int: Int? {
        switch self {
        case let .uint(u): return u <= UInt64(Int.max) ? Int(u) : nil
        case let .int(i): return Int(i)
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case let .float(f): return f
        case let .uint(u): return Double(u)
        case let .int(i): return Double(i)
        default: return nil
        }
    }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var array: [GGUFValue]? { if case let .array(a) = self { return a }; return nil }
}

/// One tensor of a GGUF file.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    public let type: GGMLType
    /// ggml order: dims[0] varies fastest (the row length).
    public let dims: [Int]
    /// Row-major shape as PyTorch/HF write it (dims reversed).
    public var shape: [Int] { dims.reversed() }
    public var count: Int { dims.reduce(1, *) }
    /// Absolute byte range in the file.
    public let byteRange: Range<Int>
}

/// A memory-mapped GGUF file (versions 2 and 3): metadata, tensor infos, and tensor data read lazily.
/// Every count, length and offset is checked against the file before use; a corrupt file is a
/// `FormatError` naming the file and the key or tensor.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [(key: String, value: GGUFValue)]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    private let meta: [String: GGUFValue]
    private let index: [String: Int]
    private let file: MappedFile

    public init(path: String) throws {
        self.path = path
        do { file = try MappedFile(path: path) } catch { throw FormatError(path, nil, "\(error)") }
        var r = Reader(bytes: file.bytes, path: path)
        guard file.bytes.count >= 24 else { throw FormatError(path, nil, "not a GGUF file: \(file.bytes.count) bytes") }
        guard try r.u32() == 0x4655_4747 else { throw FormatError(path, nil, "not a GGUF file (bad magic)") }
        version = try r.u32()
        guard version == 2 || version == 3 else {
            throw FormatError(path, nil, "GGUF version \(version) is not supported (2 and 3 are)")
        }
        let tensorCount = try r.u64(), kvCount = try r.u64()
        guard tensorCount <= 1 << 20, kvCount <= 1 << 20 else {
            throw FormatError(path, nil, "implausible counts: \(tensorCount) tensors, \(kvCount) metadata keys (corrupt file?)")
        }
        var md: [(String, GGUFValue)] = []
        var seen = Set<String>()
        for _ in 0..<kvCount {
            let key = try r.string()
            guard seen.insert(key).inserted else { throw FormatError(path, key, "duplicate metadata key") }
            let type = try r.u32()
            do { md.append((key, try r.value(type: type, depth: 0))) } catch let e as FormatError {
                throw FormatError(path, key, e.message)
            }
        }
        metadata = md
        var m: [String: GGUFValue] = [:]
        for (k, v) in md { m[k] = v }
        meta = m
        let align = m["general.alignment"]?.int ?? 32
        guard align > 0, align & (align - 1) == 0, align <= 1 << 16 else {
            throw FormatError(path, "general.alignment", "must be a power of two, got \(align)")
        }
        alignment = align
        var raw: [(String, GGMLType, [Int], Int)] = []
        var names = Set<String>()
        for _ in 0..<tensorCount {
            let name = try r.string()
            guard names.insert(name).inserted else { throw FormatError(path, name, "duplicate tensor name") }
            let nd = try r.u32()
            guard nd >= 1 && nd <= 4 else { throw FormatError(path, name, "\(nd) dimensions (1 to 4 allowed)") }
            var dims: [Int] = []
            for _ in 0..<nd {
                let d = try r.u64()
                guard d > 0 && d <= 1 << 40 else { throw FormatError(path, name, "dimension \(d) out of range") }
                dims.append(Int(d))
            }
            let t = try r.u32()
            guard let type = GGMLType(rawValue: t) else { throw FormatError(path, name, "unknown ggml type \(t)") }
            let off = try r.u64()
            guard off <= UInt64(Int.max / 2) else { throw FormatError(path, name, "offset out of range") }
            raw.append((name, type, dims, Int(off)))
        }
        let dataStart = (r.offset + align - 1) / align * align
        guard raw.isEmpty || dataStart <= file.bytes.count else { throw FormatError(path, nil, "truncated: header runs past the end of the file") }
        var infos: [GGUFTensorInfo] = []
        for (name, type, dims, off) in raw {
            var count = 1
            for d in dims {
                let (c, o) = count.multipliedReportingOverflow(by: d)
                guard !o, c <= 1 << 40 else { throw FormatError(path, name, "shape \(dims) too large") }
                count = c
            }
            guard dims[0] % type.blockElements == 0 else {
                throw FormatError(path, name, "row length \(dims[0]) is not a multiple of the \(type.name) block size \(type.blockElements)")
            }
            let bytes = count / type.blockElements * type.blockBytes
            guard off % align == 0 else { throw FormatError(path, name, "data offset \(off) is not aligned to \(align)") }
            let start = dataStart + off
            guard start + bytes <= file.bytes.count else {
                throw FormatError(path, name, "data [\(start), \(start + bytes)) runs past the end of the \(file.bytes.count)-byte file (truncated?)")
            }
            infos.append(GGUFTensorInfo(name: name, type: type, dims: dims, byteRange: start..<(start + bytes)))
        }
        let sorted = infos.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.byteRange.lowerBound < a.byteRange.upperBound {
            throw FormatError(path, b.name, "data overlaps tensor '\(a.name)'")
        }
        tensors = infos
        var idx: [String: Int] = [:]
        for (i, t) in infos.enumerated() { idx[t.name] = i }
        index = idx
    }

    public subscript(key: String) -> GGUFValue? { meta[key] }

    public func info(_ name: String) -> GGUFTensorInfo? { index[name].map { tensors[$0] } }

    /// The tensor's raw bytes (blocks of its ggml type).
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let i = info(name) else { throw FormatError(path, name, "no such tensor") }
        return UnsafeRawBufferPointer(rebasing: file.bytes[i.byteRange])
    }

    /// The tensor dequantized to float32, row-major in HF shape.
    public func floats(_ name: String) throws -> FloatBuffer {
        guard let i = info(name) else { throw FormatError(path, name, "no such tensor") }
        guard i.type.isDequantizable else { throw FormatError(path, name, "type \(i.type.name) cannot be converted to float") }
        let out = FloatBuffer(count: i.count)
        Dequantize.run(i.type, UnsafeRawPointer(file.bytes.baseAddress! + i.byteRange.lowerBound), count: i.count,
                       into: out.mutable.baseAddress!)
        return out
    }

    /// A string array of metadata (e.g. `tokenizer.ggml.tokens`).
    public func strings(_ key: String) throws -> [String] {
        guard let a = meta[key]?.array else { throw FormatError(path, key, "missing or not an array") }
        return try a.enumerated().map { i, v in
            guard let s = v.string else { throw FormatError(path, "\(key)[\(i)]", "not a string") }
            return s
        }
    }

    /// Bounds-checked little-endian reader over the mapping.
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        let path: String
        var offset = 0

        mutating func take(_ n: Int) throws -> Int {
            guard n >= 0, offset <= bytes.count - n else {
                throw FormatError(path, nil, "truncated: needs \(n) bytes at offset \(offset) of \(bytes.count)")
            }
            defer { offset += n }
            return offset
        }
        mutating func u8() throws -> UInt8 { bytes[try take(1)] }
        mutating func u32() throws -> UInt32 { bytes.loadUnaligned(fromByteOffset: try take(4), as: UInt32.self).littleEndian }
        mutating func u64() throws -> UInt64 { bytes.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self).littleEndian }

        mutating func string() throws -> String {
            let n = try u64()
            guard n <= UInt64(bytes.count - offset) else { throw FormatError(path, nil, "string length \(n) runs past the end of the file") }
            let at = try take(Int(n))
            guard let s = String(validating: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + Int(n))]), as: UTF8.self) else {
                throw FormatError(path, nil, "string at offset \(at) is not valid UTF-8")
            }
            return s
        }

        mutating func value(type: UInt32, depth: Int) throws -> GGUFValue {
            switch type {
            case 0: return .uint(UInt64(try u8()))
            case 1: return .int(Int64(Int8(bitPattern: try u8())))
            case 2: return .uint(UInt64(bytes.loadUnaligned(fromByteOffset: try take(2), as: UInt16.self).littleEndian))
            case 3: return .int(Int64(bytes.loadUnaligned(fromByteOffset: try take(2), as: Int16.self).littleEndian))
            case 4: return .uint(UInt64(try u32()))
            case 5: return .int(Int64(Int32(bitPattern: try u32())))
            case 6: return .float(Double(Float(bitPattern: try u32())))
            case 7:
                let b = try u8()
                guard b <= 1 else { throw FormatError(path, nil, "bool value \(b)") }
                return .bool(b == 1)
            case 8: return .string(try string())
            case 9:
                guard depth < 4 else { throw FormatError(path, nil, "arrays nested too deep") }
                let et = try u32(), n = try u64()
                guard n <= UInt64(bytes.count - offset) else { throw FormatError(path, nil, "array of \(n) elements runs past the end of the file") }
                var a: [GGUFValue] = []
                a.reserveCapacity(Int(n))
                for _ in 0..<n { a.append(try value(type: et, depth: depth + 1)) }
                return .array(a)
            case 10: return .uint(try u64())
            case 11: return .int(Int64(bitPattern: try u64()))
            case 12: return .float(Double(bitPattern: try u64()))
            default: throw FormatError(path, nil, "unknown metadata value type \(type)")
            }
        }
    }
}
