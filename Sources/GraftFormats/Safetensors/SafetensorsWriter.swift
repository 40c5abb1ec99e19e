#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import GraftTensor

/// A tensor to be written: its name, dtype and shape, known before any data is.
public struct TensorSpec: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name; self.dtype = dtype; self.shape = shape
    }
    public var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
}

/// Writes a set of tensors, known up front, into safetensors shards of at most `maxShardBytes` each
/// (a tensor larger than the limit gets a shard of its own), plus `model.safetensors.index.json` when
/// there is more than one shard. Headers are laid out first, so tensors can then be written in any
/// order and from several threads; each shard is complete on disk as soon as its last tensor lands.
public final class ShardedSafetensorsWriter: @unchecked Sendable {
    public let directory: String
    public let shardNames: [String]
    private struct Slot { let shard: Int; let offset: Int; let spec: TensorSpec }
    private let slots: [String: Slot]
    private var fds: [Int32]
    private var remaining: [Int]
    private let lock = NSLock()

    public init(directory: String, specs: [TensorSpec], maxShardBytes: Int = 5_000_000_000,
                prefix: String = "model", metadata: [String: String] = ["format": "pt"]) throws {
        self.directory = directory
        // Greedy fill in the given order.
        var shards: [[TensorSpec]] = [[]]
        var size = 0
        var seen = Set<String>()
        for s in specs {
            guard seen.insert(s.name).inserted else { throw FormatError(directory, s.name, "tensor listed twice for writing") }
            if size > 0 && size + s.byteCount > maxShardBytes { shards.append([]); size = 0 }
            shards[shards.count - 1].append(s)
            size += s.byteCount
        }
        let n = shards.count
        shardNames = n == 1 ? ["\(prefix).safetensors"]
            : (1...n).map { String(format: "\(prefix)-%05d-of-%05d.safetensors", $0, n) }
        var slots: [String: Slot] = [:]
        var fds: [Int32] = []
        var remaining: [Int] = []
        for (si, shard) in shards.enumerated() {
            // Wider elements first, so every tensor starts aligned to its element size.
            let ordered = shard.enumerated().sorted {
                ($0.element.dtype.byteSize, -$0.offset) > ($1.element.dtype.byteSize, -$1.offset)
            }.map(\.element)
            var entries: [(String, JSONValue)] = []
            if !metadata.isEmpty {
                entries.append(("__metadata__", .object(metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })))
            }
            var off = 0
            var placed: [(TensorSpec, Int)] = []
            for s in ordered {
                entries.append((s.name, .object([
                    ("dtype", .string(s.dtype.rawValue)),
                    ("shape", .array(s.shape.map { .int(Int64($0)) })),
                    ("data_offsets", .array([.int(Int64(off)), .int(Int64(off + s.byteCount))])),
                ])))
                placed.append((s, off))
                off += s.byteCount
            }
            var header = Array(JSONValue.object(entries).serialized().utf8)
            while (8 + header.count) % 8 != 0 { header.append(0x20) }
            let dataStart = 8 + header.count
            for (s, o) in placed { slots[s.name] = Slot(shard: si, offset: dataStart + o, spec: s) }
            let path = (directory as NSString).appendingPathComponent(shardNames[si])
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw FormatError(path, nil, "cannot create: \(String(cString: strerror(errno)))") }
            fds.append(fd)
            var prefixBytes = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
            prefixBytes += header
            try Self.pwriteAll(fd, prefixBytes.withUnsafeBytes { $0 }, at: 0, path: path)
            guard ftruncate(fd, off_t(dataStart + off)) == 0 else {
                throw FormatError(path, nil, "cannot size file: \(String(cString: strerror(errno)))")
            }
            remaining.append(placed.count)
        }
        self.slots = slots
        self.fds = fds
        self.remaining = remaining
    }

    private static func pwriteAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, at offset: Int, path: String) throws {
        var done = 0
        while done < buf.count {
            let r = pwrite(fd, buf.baseAddress! + done, buf.count - done, off_t(offset + done))
            if r < 0 {
                if errno == EINTR { continue }
                throw FormatError(path, nil, "write failed: \(String(cString: strerror(errno)))")
            }
            done += r
        }
    }

    /// Writes one tensor's bytes (already in the declared dtype). Thread-safe.
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws {
        guard let slot = slots[name] else { throw FormatError(directory, name, "tensor was not declared to the writer") }
        let path = (directory as NSString).appendingPathComponent(shardNames[slot.shard])
        guard bytes.count == slot.spec.byteCount else {
            throw FormatError(path, name, "got \(bytes.count) bytes, declared \(slot.spec.byteCount)")
        }
        if bytes.count > 0 { try Self.pwriteAll(fds[slot.shard], bytes, at: slot.offset, path: path) }
        lock.lock()
        remaining[slot.shard] -= 1
        let shardDone = remaining[slot.shard] == 0
        lock.unlock()
        if shardDone { close(fds[slot.shard]); fds[slot.shard] = -1 }
    }

    public func write(_ name: String, tensor: Tensor) throws {
        try write(name, bytes: tensor.bytes)
    }

    /// Checks every declared tensor was written and writes the index (for more than one shard).
    public func finish() throws {
        for (i, r) in remaining.enumerated() where r != 0 {
            throw FormatError((directory as NSString).appendingPathComponent(shardNames[i]), nil, "\(r) tensor(s) never written")
        }
        guard shardNames.count > 1 else { return }
        let total = slots.values.reduce(0) { $0 + $1.spec.byteCount }
        let map = slots.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.string(shardNames[$0.value.shard])) }
        let index = JSONValue.object([
            ("metadata", .object([("total_size", .int(Int64(total)))])),
            ("weight_map", .object(map)),
        ])
        let path = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        try FileBytes.write(Data((index.serialized(pretty: true) + "\n").utf8), to: path)
    }

    deinit { for fd in fds where fd >= 0 { close(fd) } }

    /// Writes `tensors` as one safetensors file (a convenience for small outputs and tests).
    public static func writeFile(_ path: String, _ tensors: [(String, Tensor)], metadata: [String: String] = ["format": "pt"]) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let w = try ShardedSafetensorsWriter(directory: dir.isEmpty ? "." : dir,
                                             specs: tensors.map { TensorSpec(name: $0.0, dtype: $0.1.dtype, shape: $0.1.shape) },
                                             maxShardBytes: Int.max, prefix: name, metadata: metadata)
        for (n, t) in tensors { try w.write(n, tensor: t) }
        try w.finish()
    }
}
