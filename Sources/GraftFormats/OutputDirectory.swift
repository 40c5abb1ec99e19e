#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CKernels
import Dispatch
import Foundation
import GraftTensor

/// An output folder that appears only when complete: everything is written into a hidden sibling
/// (`.NAME.partial-PID`) that is made durable (every file and folder synced) and then swapped into place
/// in one step by `commit()`. A failure (`abandon()`), Ctrl-C / SIGTERM, or an input truncated while it
/// is read removes the partial folder; after SIGKILL or power loss the partial folder is left under its
/// hidden name, never under the output's, and the next writer of the same output removes it.
///
/// Refused up front: an output path that is a symbolic link, and an output that is one of `inputs`,
/// lies inside one of them, or would replace a folder holding one of them.
public final class OutputDirectory: @unchecked Sendable {
    public let finalPath: String
    public let tempPath: String
    private let overwrite: Bool
    private var done = false
    private let guardSlot: Int32
    private let inputs: [String]

    /// - Parameters:
    ///   - overwrite: replace an existing `finalPath` on commit; otherwise an existing, non-empty folder is
    ///     an error up front.
    ///   - inputs: the files and folders the output is made from (checked against the output's place).
    public init(_ finalPath: String, overwrite: Bool = false, inputs: [String] = []) throws {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: finalPath).standardizedFileURL
        self.finalPath = url.path
        self.overwrite = overwrite
        self.inputs = inputs
        try OutputPlace.refuseLink(url.path)
        try OutputPlace.refuseOverlap(output: url.path, inputs: inputs)
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: url.path, isDirectory: &isDir) {
            if !isDir.boolValue { throw FormatError(url.path, nil, "exists and is not a folder") }
            let empty = ((try? fm.contentsOfDirectory(atPath: url.path)) ?? []).isEmpty
            if !empty && !overwrite { throw FormatError(url.path, nil, "output folder exists and is not empty (use --force to replace it)") }
        }
        let parent = url.deletingLastPathComponent().path
        if !fm.fileExists(atPath: parent) {
            do { try fm.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
                throw FormatError(parent, nil, "cannot create folder: \(error.localizedDescription)")
            }
        }
        OutputPlace.removeStalePartials(of: url.path)
        tempPath = OutputPlace.partialPath(of: url.path)
        try? fm.removeItem(atPath: tempPath)
        do { try fm.createDirectory(atPath: tempPath, withIntermediateDirectories: false) } catch {
            throw FormatError(tempPath, nil, "cannot create folder: \(error.localizedDescription)")
        }
        InterruptCleanup.shared.register(tempPath)
        guardSlot = graft_guard_partial(tempPath)
        TestPause.at("created", output: finalPath)
    }

    /// Path of a file inside the (temporary) folder.
    public func path(_ name: String) -> String { (tempPath as NSString).appendingPathComponent(name) }

    /// Makes the finished folder durable and moves it into place (replacing an earlier one in one step).
    /// Refused when one of the inputs, read through a memory map, changed meanwhile.
    public func commit() throws {
        guard !done else { return }
        TestPause.at("commit", output: finalPath)
        let changed = OutputPlace.changedInputs(inputs)
        if !changed.isEmpty {
            abandon()
            throw FormatError(changed[0], nil, "changed while it was being read" + (changed.count > 1 ? " (and \(changed.dropFirst().joined(separator: ", ")))" : "")
                              + "; nothing was written to \(finalPath). Run again once the input is complete.")
        }
        try Durable.syncTree(tempPath)
        let fm = FileManager.default
        if fm.fileExists(atPath: finalPath) {
            // One step where the file system can; the old output then sits at the partial path.
            if graft_exchange_paths(tempPath, finalPath) != 0 {
                let old = OutputPlace.oldPath(of: finalPath)
                try fm.moveItem(atPath: finalPath, toPath: old)
                do { try fm.moveItem(atPath: tempPath, toPath: finalPath) } catch {
                    try? fm.moveItem(atPath: old, toPath: finalPath)
                    throw FormatError(finalPath, nil, "cannot move output into place: \(error.localizedDescription)")
                }
                try? fm.moveItem(atPath: old, toPath: tempPath)
            }
            try Durable.syncFolder((finalPath as NSString).deletingLastPathComponent)
            try? fm.removeItem(atPath: tempPath)
        } else {
            do { try fm.moveItem(atPath: tempPath, toPath: finalPath) } catch {
                throw FormatError(finalPath, nil, "cannot move output into place: \(error.localizedDescription)")
            }
            try Durable.syncFolder((finalPath as NSString).deletingLastPathComponent)
        }
        finish()
    }

    /// Removes the partial folder.
    public func abandon() {
        guard !done else { return }
        try? FileManager.default.removeItem(atPath: tempPath)
        finish()
    }

    private func finish() {
        done = true
        InterruptCleanup.shared.unregister(tempPath)
        graft_unguard_partial(guardSlot)
    }

    deinit { abandon() }
}

/// A single output file written the same way: into `.NAME.partial-PID` beside it, synced, renamed into place.
public enum DurableFile {
    /// Writes `data` to `path` so that `path` holds either its earlier contents or all of `data`.
    public static func write(_ data: Data, to path: String, inputs: [String] = []) throws {
        try write(to: path, inputs: inputs) { tmp in try FileBytes.write(data, to: tmp) }
    }

    public static func write(_ text: String, to path: String, inputs: [String] = []) throws {
        try write(Data(text.utf8), to: path, inputs: inputs)
    }

    /// Runs `body` with a temporary path beside `path` to write the file into, then commits it as above;
    /// on any error (or an input that changed while read) the temporary file is removed.
    public static func write(to path: String, inputs: [String] = [], _ body: (String) throws -> Void) throws {
        let final = URL(fileURLWithPath: path).standardizedFileURL.path
        try OutputPlace.refuseLink(final)
        try OutputPlace.refuseOverlap(output: final, inputs: inputs)
        OutputPlace.removeStalePartials(of: final)
        let tmp = OutputPlace.partialPath(of: final)
        InterruptCleanup.shared.register(tmp)
        let slot = graft_guard_partial(tmp)
        defer { InterruptCleanup.shared.unregister(tmp); graft_unguard_partial(slot) }
        do {
            try body(tmp)
            TestPause.at("commit", output: final)
            let changed = OutputPlace.changedInputs(inputs)
            if !changed.isEmpty {
                throw FormatError(changed[0], nil, "changed while it was being read; nothing was written to \(final). Run again once the input is complete.")
            }
            try Durable.syncFile(tmp)
            guard rename(tmp, final) == 0 else { throw FormatError(final, nil, "cannot move output into place: \(String(cString: strerror(errno)))") }
            try Durable.syncFolder((final as NSString).deletingLastPathComponent)
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
    }
}

/// The reliability tests' way to act at an exact moment of a write without sleeping: with
/// `GRAFT_TEST_PAUSE=POINT[@NAME]:FIFO` a writer (of the output named NAME, when given) stops at POINT —
/// `created` (the partial output exists and the inputs are open; a merge or fuse has read no tensor yet)
/// or `commit` (everything written, before the checks and the rename) — until the test has opened the
/// named pipe FIFO for writing and closed it.
enum TestPause {
    static func at(_ point: String, output: String) {
        guard let v = ProcessInfo.processInfo.environment["GRAFT_TEST_PAUSE"], let colon = v.firstIndex(of: ":") else { return }
        let spec = v[..<colon].split(separator: "@", maxSplits: 1).map(String.init)
        guard spec[0] == point, spec.count == 1 || spec[1] == (output as NSString).lastPathComponent else { return }
        let fd = open(String(v[v.index(after: colon)...]), O_RDONLY)
        guard fd >= 0 else { return }
        var byte: UInt8 = 0
        while read(fd, &byte, 1) > 0 {}
        close(fd)
    }
}

/// fsync of files and folders: what makes a rename a commit that survives power loss.
enum Durable {
    static func syncFile(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FormatError(path, nil, "cannot open to sync: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw FormatError(path, nil, "cannot sync to disk: \(String(cString: strerror(errno)))") }
    }

    static func syncFolder(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw FormatError(path, nil, "cannot open folder to sync: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // Some file systems do not sync folders (EINVAL); the rename is then as durable as they make it.
        if fsync(fd) != 0 && errno != EINVAL {
            throw FormatError(path, nil, "cannot sync folder to disk: \(String(cString: strerror(errno)))")
        }
    }

    /// Every regular file and folder under `root`, files first, then each folder after its contents.
    static func syncTree(_ root: String) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: root, isDirectory: &isDir) else { return }
        guard isDir.boolValue else { return try syncFile(root) }
        for name in try fm.contentsOfDirectory(atPath: root) {
            let p = (root as NSString).appendingPathComponent(name)
            var st = stat()
            guard lstat(p, &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR { try syncTree(p) } else if (st.st_mode & S_IFMT) == S_IFREG { try syncFile(p) }
        }
        try syncFolder(root)
    }
}

/// Where an output may go, and the hidden names its partial and replaced versions take.
public enum OutputPlace {
    static func partialPath(of final: String) -> String { hidden(final, "partial-\(getpid())") }
    static func oldPath(of final: String) -> String { hidden(final, "old-\(getpid())") }

    private static func hidden(_ final: String, _ suffix: String) -> String {
        let parent = (final as NSString).deletingLastPathComponent
        return (parent as NSString).appendingPathComponent(".\((final as NSString).lastPathComponent).\(suffix)")
    }

    /// Removes `.NAME.partial-PID` siblings of `final` left by processes that no longer run (killed, or
    /// the machine lost power), and puts back a `.NAME.old-PID` whose replacement never arrived.
    public static func removeStalePartials(of final: String) {
        let fm = FileManager.default
        let parent = (final as NSString).deletingLastPathComponent
        let name = (final as NSString).lastPathComponent
        guard let entries = try? fm.contentsOfDirectory(atPath: parent) else { return }
        for e in entries where e.hasPrefix(".\(name).") {
            let rest = e.dropFirst(name.count + 2)
            for kind in ["partial-", "old-"] where rest.hasPrefix(kind) {
                guard let pid = Int32(rest.dropFirst(kind.count)), pid != getpid(), !isRunning(pid) else { continue }
                let p = (parent as NSString).appendingPathComponent(e)
                if kind == "old-" && !fm.fileExists(atPath: final) {
                    try? fm.moveItem(atPath: p, toPath: final)
                } else {
                    try? fm.removeItem(atPath: p)
                }
            }
        }
    }

    /// Whether process `pid` exists and is not a zombie (a killed writer stays a zombie until its parent
    /// reaps it, and its partial output is stale from the moment it died).
    static func isRunning(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        #if os(Linux)
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")"), stat.index(close, offsetBy: 2) < stat.endIndex {
            return stat[stat.index(close, offsetBy: 2)] != "Z"
        }
        #endif
        return true
    }

    /// Refuses an output path that is a symbolic link (replacing it would leave the link's target, or
    /// write through it to a place the user did not name).
    static func refuseLink(_ path: String) throws {
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?"
            throw FormatError(path, nil, "the output path is a symbolic link (to \(target)); name the real place to write")
        }
    }

    /// Refuses an output that is one of the inputs, lies inside an input folder, or would replace a
    /// folder that holds an input. Paths are compared after resolving symbolic links.
    public static func refuseOverlap(output: String, inputs: [String]) throws {
        let out = resolved(output)
        for input in inputs {
            guard FileManager.default.fileExists(atPath: input) else { continue }
            let inp = resolved(input)
            if out == inp {
                throw FormatError(output, nil, "the output is the input \(input) itself; write somewhere else")
            }
            if out.hasPrefix(inp + "/") {
                throw FormatError(output, nil, "the output lies inside the input folder \(input); write somewhere else")
            }
            if inp.hasPrefix(out + "/") {
                throw FormatError(output, nil, "the output folder holds the input \(input), which writing it would replace; write somewhere else")
            }
        }
    }

    /// The memory-mapped files, among `inputs` or inside them, that changed since they were opened.
    static func changedInputs(_ inputs: [String]) -> [String] {
        guard !inputs.isEmpty else { return [] }
        let roots = inputs.map(resolved)
        return OpenInputs.shared.changed().filter { p in
            let r = resolved(p)
            return roots.contains { r == $0 || r.hasPrefix($0 + "/") }
        }
    }

    /// `path` with symbolic links resolved in the part that exists.
    public static func resolved(_ path: String) -> String {
        let abs = URL(fileURLWithPath: path).standardizedFileURL.path
        var head = abs
        var tail: [String] = []
        while !FileManager.default.fileExists(atPath: head), head != "/" {
            tail.insert((head as NSString).lastPathComponent, at: 0)
            head = (head as NSString).deletingLastPathComponent
        }
        guard let real = realpath(head, nil) else { return abs }
        defer { free(real) }
        var r = String(cString: real)
        for t in tail { r = (r as NSString).appendingPathComponent(t) }
        return r
    }
}

/// Removes registered partial outputs when the process is interrupted (SIGINT, SIGTERM), then exits
/// with the conventional status 128 + signal.
final class InterruptCleanup: @unchecked Sendable {
    static let shared = InterruptCleanup()
    private let lock = NSLock()
    private var paths = Set<String>()
    private var sources: [DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "graft.interrupt")

    func register(_ p: String) {
        lock.lock(); defer { lock.unlock() }
        paths.insert(p)
        guard sources.isEmpty else { return }
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            src.setEventHandler { [unowned self] in
                self.lock.lock()
                let ps = self.paths
                self.lock.unlock()
                for p in ps { try? FileManager.default.removeItem(atPath: p) }
                FileHandle.standardError.write(Data("\ninterrupted: partial output removed\n".utf8))
                exit(128 + sig)
            }
            src.resume()
            sources.append(src)
        }
    }

    func unregister(_ p: String) {
        lock.lock(); defer { lock.unlock() }
        paths.remove(p)
    }
}
