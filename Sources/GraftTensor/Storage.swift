#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bytes a tensor lives in: either memory Graft allocated, or a read-only range of a memory-mapped
/// file that is kept alive as long as any tensor refers to it.
public final class Storage: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    private let allocation: UnsafeMutableRawPointer?
    private let owner: AnyObject?

    /// Takes ownership of a fresh allocation of `byteCount` bytes (64-byte aligned).
    public init(allocating byteCount: Int) {
        // malloc'd with 63 bytes to spare and aligned here, not with an aligned allocation: with glibc's
        // memalign, freed blocks were not reused for later requests of the same size, and a loop
        // allocating activations of fixed sizes grew the heap without bound (1.5–2 GB after 40 MiniLM
        // embedding batches, 6–24 MB of it in use).
        let p = UnsafeMutableRawPointer.allocate(byteCount: byteCount + 63, alignment: 16)
        let aligned = UnsafeMutableRawPointer(bitPattern: (Int(bitPattern: p) + 63) & ~63)!
        bytes = UnsafeRawBufferPointer(start: aligned, count: byteCount)
        allocation = p
        owner = nil
    }

    /// Wraps memory owned by `owner` (e.g. a `MappedFile`), which is kept alive as long as this storage.
    public init(borrowing bytes: UnsafeRawBufferPointer, owner: AnyObject?) {
        self.bytes = bytes
        self.allocation = nil
        self.owner = owner
    }

    public var mutableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(mutating: bytes) }

    deinit { allocation?.deallocate() }
}

/// A read-only memory map of a whole file. Pages are faulted in lazily on first touch.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    public enum Failure: Error, CustomStringConvertible {
        case open(String, Int32), map(String, Int32)
        public var description: String {
            switch self {
            case let .open(p, e): return "\(p): cannot open (\(String(cString: strerror(e))))"
            case let .map(p, e): return "\(p): cannot memory-map (\(String(cString: strerror(e))))"
            }
        }
    }

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw Failure.open(path, errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw Failure.open(path, errno) }
        let size = Int(st.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw Failure.map(path, errno)
        }
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    /// Tells the kernel this process no longer needs the pages of `range` (they stay in the page
    /// cache but leave this process's resident set). Used by the streaming merge to keep memory flat.
    public func dropPages(_ range: Range<Int>) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound / page) * page
        let end = min(bytes.count, ((range.upperBound + page - 1) / page) * page)
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, Int32(MADV_DONTNEED))
    }

    deinit {
        if let p = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: p), bytes.count) }
    }
}
