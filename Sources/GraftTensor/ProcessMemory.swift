import CKernels
import Foundation

/// Process-wide allocator settings for programs that allocate large activation buffers per batch.
public enum ProcessMemory {
    /// glibc gives each freed block above its mmap threshold back to the kernel at once, so a model that
    /// allocates its activations per batch pays a page fault per 4 KB page on every batch (measured: a
    /// third of the CPU time of evaluating MiniLM, 15 s → 7 s for a linear probe's features). Keeps
    /// blocks up to 32 MB (glibc's largest threshold) in the heap and never trims it: the process holds
    /// on to its peak memory instead. No-op elsewhere (macOS's allocator caches large blocks itself).
    public static func keepFreedBlocks() {
        graft_keep_freed_blocks()
    }

    /// Bytes of the process's main heap (glibc); 0 where the C library does not report it.
    public static var heapBytes: Int { Int(graft_heap_bytes()) }

    /// The process's peak resident memory so far, in bytes (Linux: VmHWM; elsewhere getrusage's maximum RSS).
    public static var peakResidentBytes: Int {
        #if os(Linux)
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") {
            return kb * 1024
        }
        return 0
        #else
        var u = rusage()
        getrusage(RUSAGE_SELF, &u)
        return Int(u.ru_maxrss)  // bytes on macOS
        #endif
    }
}
