import GraftTensor

/// Where one tensor of a safetensors file lives.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Absolute byte range within the file.
    public let byteRange: Range<Int>

    public var count: Int { shape.reduce(1, *) }
}

/// A memory-mapped safetensors file. Opening validates the whole header; tensor data is read lazily,
/// page by page, when a tensor is first touched.
///
/// Format: 8-byte little-endian header length N, N bytes of JSON
/// `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`, then the
/// data, offsets relative to the end of the header.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let tensors: [TensorInfo]
    public let metadata: [String: String]
    private let index: [String: Int]
    private let file: MappedFile

    /// Headers larger than this are refused (the reference implementation uses the same bound).
    public static let maxHeaderBytes = 100_000_000

    public init(path: String) throws {
        self.path = path
        do { file = try MappedFile(path: path) } catch { throw FormatError(path, nil, "\(error)") }
        let bytes = file.bytes
        guard bytes.count >= 8 else {
            throw FormatError(path, nil, "not a safetensors file: \(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let n = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard n <= UInt64(Self.maxHeaderBytes) else {
            throw FormatError(path, nil, "header length \(n) exceeds the \(Self.maxHeaderBytes)-byte limit (corrupt or not safetensors)")
        }
        let headerLen = Int(n)
        guard 8 + headerLen <= bytes.count else {
            throw FormatError(path, nil, "header length \(headerLen) runs past the end of the \(bytes.count)-byte file (truncated?)")
        }
        guard headerLen >= 2, bytes[8] == UInt8(ascii: "{") else {
            throw FormatError(path, nil, "header does not start with '{' (not a safetensors file)")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLen)])) } catch {
            throw FormatError(path, nil, "header is not valid JSON: \(error)")
        }
        guard let entries = json.objectValue else { throw FormatError(path, nil, "header is not a JSON object") }
        let dataStart = 8 + headerLen
        let dataSize = bytes.count - dataStart
        var infos: [TensorInfo] = []
        var meta: [String: String] = [:]
        for (name, v) in entries {
            if name == "__metadata__" {
                guard let o = v.objectValue else { throw FormatError(path, "__metadata__", "must be an object of strings") }
                for (k, mv) in o {
                    guard let s = mv.stringValue else { throw FormatError(path, "__metadata__.\(k)", "must be a string") }
                    meta[k] = s
                }
                continue
            }
            infos.append(try Self.parseEntry(name: name, v, path: path, dataStart: dataStart, dataSize: dataSize))
        }
        // No two tensors may share bytes.
        let sorted = infos.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.byteRange.lowerBound < a.byteRange.upperBound {
            throw FormatError(path, b.name, "data overlaps tensor '\(a.name)'")
        }
        tensors = infos
        metadata = meta
        var idx: [String: Int] = [:]
        for (i, t) in infos.enumerated() { idx[t.name] = i }
        index = idx
    }

    private static func parseEntry(name: String, _ v: JSONValue, path: String, dataStart: Int, dataSize: Int) throws -> TensorInfo {
        guard v.objectValue != nil else { throw FormatError(path, name, "entry is not an object") }
        guard let ds = v["dtype"]?.stringValue else { throw FormatError(path, name, "missing 'dtype'") }
        guard let dtype = DType(safetensors: ds) else {
            throw FormatError(path, name, "unsupported dtype '\(ds)' (supported: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let shapeV = v["shape"]?.arrayValue else { throw FormatError(path, name, "missing 'shape'") }
        var shape: [Int] = []
        var count = 1
        for d in shapeV {
            guard let x = d.intValue, x >= 0, x <= Int64(Int32.max) else {
                throw FormatError(path, name, "shape entries must be non-negative integers")
            }
            shape.append(Int(x))
            let (m, o) = count.multipliedReportingOverflow(by: Int(x))
            guard !o else { throw FormatError(path, name, "shape \(shape) overflows") }
            count = m
        }
        guard let offs = v["data_offsets"]?.arrayValue, offs.count == 2,
              let b = offs[0].intValue, let e = offs[1].intValue else {
            throw FormatError(path, name, "missing or malformed 'data_offsets' (need [begin, end])")
        }
        guard b >= 0, e >= b, e <= Int64(dataSize) else {
            throw FormatError(path, name, "data_offsets [\(b), \(e)] lie outside the \(dataSize)-byte data section (truncated file?)")
        }
        let (bytesNeeded, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !o, Int64(bytesNeeded) == e - b else {
            throw FormatError(path, name, "shape \(shape) × \(dtype.rawValue) needs \(bytesNeeded) bytes but data_offsets span \(e - b)")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, byteRange: (dataStart + Int(b))..<(dataStart + Int(e)))
    }

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// The tensor, as a zero-copy view into the mapping.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = info(name) else { throw FormatError(path, name, "no such tensor") }
        let view = UnsafeRawBufferPointer(rebasing: file.bytes[info.byteRange])
        return Tensor(dtype: info.dtype, shape: info.shape, storage: Storage(borrowing: view, owner: file))
    }

    /// Drops the tensor's pages from this process's resident memory (after its last use).
    public func releasePages(_ name: String) {
        if let info = info(name) { file.dropPages(info.byteRange) }
    }
}
