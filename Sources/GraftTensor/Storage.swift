#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CKernels
import Foundation

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
        guardSlot = graft_guard_mapping(p, size, path)
        OpenInputs.shared.add(self, FileIdentity(st))
    }

    private var guardSlot: Int32 = -1

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
        graft_unguard_mapping(guardSlot)
        OpenInputs.shared.remove(self)
        if let p = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: p), bytes.count) }
    }
}

/// What identifies a file's contents without reading them: device, inode, size and modification time.
public struct FileIdentity: Equatable, Sendable {
    let device: UInt64, inode: UInt64, size: Int64, modifiedSeconds: Int, modifiedNanoseconds: Int

    init(_ st: stat) {
        device = UInt64(st.st_dev); inode = UInt64(st.st_ino); size = Int64(st.st_size)
        #if canImport(Darwin)
        modifiedSeconds = st.st_mtimespec.tv_sec; modifiedNanoseconds = st.st_mtimespec.tv_nsec
        #else
        modifiedSeconds = st.st_mtim.tv_sec; modifiedNanoseconds = st.st_mtim.tv_nsec
        #endif
    }

    /// The file at `path` now (following symbolic links), or nil when it is gone.
    public static func of(_ path: String) -> FileIdentity? {
        var st = stat()
        return stat(path, &st) == 0 ? FileIdentity(st) : nil
    }
}

/// The files this process reads through memory maps, with what each was when it was opened. An output
/// is only committed if none of its inputs changed meanwhile (`changed()`; GraftFormats' OutputDirectory):
/// a model or adapter rewritten while Graft read it would otherwise give a merge of two versions. (A mapped file that is truncated makes
/// reading fault; guard.c turns that into an error naming the file.)
public final class OpenInputs: @unchecked Sendable {
    public static let shared = OpenInputs()
    private let lock = NSLock()
    private var files: [ObjectIdentifier: (path: String, identity: FileIdentity)] = [:]

    func add(_ f: MappedFile, _ id: FileIdentity) {
        lock.withLock { files[ObjectIdentifier(f)] = (f.path, id) }
    }

    func remove(_ f: MappedFile) {
        lock.withLock { _ = files.removeValue(forKey: ObjectIdentifier(f)) }
    }

    /// Paths of open inputs whose file is no longer the one that was opened (other size, modification
    /// time or inode, or gone), sorted.
    public func changed() -> [String] {
        let now = lock.withLock { files.values.map { $0 } }
        return Set(now.filter { FileIdentity.of($0.path) != $0.identity }.map(\.path)).sorted()
    }
}
