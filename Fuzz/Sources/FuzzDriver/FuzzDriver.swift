import Foundation

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

nonisolated(unsafe) private var body: ((UnsafeBufferPointer<UInt8>) -> Void)? = nil

/// Runs libFuzzer (its command line: corpus folders, -max_total_time=, -runs=, …) on `run`, which gets
/// each input's bytes. Parsers that read files get them through `file(named:)`.
public func fuzz(_ run: @escaping (UnsafeBufferPointer<UInt8>) -> Void) -> Never {
    body = run
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        body!(UnsafeBufferPointer(start: data, count: size))
        return 0
    })
}

/// A folder of this process's own in shared memory (or /tmp), for parsers that take paths.
public let scratch: String = {
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    let d = base + "/graft-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: "/dev/shm/graft-fuzz-\(getpid())") }
    return d
}()

/// Writes `bytes` to `name` in the scratch folder and returns its path.
public func file(named name: String, _ bytes: UnsafeBufferPointer<UInt8>) -> String {
    let p = scratch + "/" + name
    FileManager.default.createFile(atPath: p, contents: Data(buffer: bytes))
    return p
}
