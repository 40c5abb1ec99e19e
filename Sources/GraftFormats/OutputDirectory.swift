#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Foundation

/// An output folder that appears only when complete: everything is written into a hidden sibling
/// (`.NAME.partial-PID`) that is renamed into place by `commit()`. A failure (`abandon()`), or
/// Ctrl-C / SIGTERM while it is open, removes the partial folder, so no half-written output is left.
public final class OutputDirectory: @unchecked Sendable {
    public let finalPath: String
    public let tempPath: String
    private let overwrite: Bool
    private var done = false

    /// - Parameter overwrite: replace an existing `finalPath` on commit; otherwise an existing,
    ///   non-empty folder is an error up front.
    public init(_ finalPath: String, overwrite: Bool = false) throws {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: finalPath).standardizedFileURL
        self.finalPath = url.path
        self.overwrite = overwrite
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
        tempPath = (parent as NSString).appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
        try? fm.removeItem(atPath: tempPath)
        do { try fm.createDirectory(atPath: tempPath, withIntermediateDirectories: false) } catch {
            throw FormatError(tempPath, nil, "cannot create folder: \(error.localizedDescription)")
        }
        InterruptCleanup.shared.register(tempPath)
    }

    /// Path of a file inside the (temporary) folder.
    public func path(_ name: String) -> String { (tempPath as NSString).appendingPathComponent(name) }

    /// Moves the finished folder into place.
    public func commit() throws {
        guard !done else { return }
        let fm = FileManager.default
        if fm.fileExists(atPath: finalPath) {
            let old = finalPath + ".old-\(getpid())"
            try fm.moveItem(atPath: finalPath, toPath: old)
            do { try fm.moveItem(atPath: tempPath, toPath: finalPath) } catch {
                try? fm.moveItem(atPath: old, toPath: finalPath)
                throw FormatError(finalPath, nil, "cannot move output into place: \(error.localizedDescription)")
            }
            try? fm.removeItem(atPath: old)
        } else {
            do { try fm.moveItem(atPath: tempPath, toPath: finalPath) } catch {
                throw FormatError(finalPath, nil, "cannot move output into place: \(error.localizedDescription)")
            }
        }
        done = true
        InterruptCleanup.shared.unregister(tempPath)
    }

    /// Removes the partial folder.
    public func abandon() {
        guard !done else { return }
        try? FileManager.default.removeItem(atPath: tempPath)
        done = true
        InterruptCleanup.shared.unregister(tempPath)
    }

    deinit { abandon() }
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
