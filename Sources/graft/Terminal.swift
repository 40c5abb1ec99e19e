import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GraftMerging
import GraftTensor

/// `--precision auto|bf16|f32` → whether the products with the frozen weights run in bf16 (float32 sums);
/// auto: where bf16 products were measured faster on this CPU (`KernelChoices`; needs AVX512-BF16).
func usesBF16(precision p: String) throws -> Bool {
    switch p {
    case "bf16": return true
    case "f32": return false
    case "auto": return KernelChoices.active.bf16
    default: throw ValidationError("--precision must be auto, bf16 or f32 (got '\(p)')")
    }
}

/// Writes to standard error.
func printErr(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// Human-readable byte counts.
func formatBytes(_ n: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"]
    var v = Double(n), u = 0
    while v >= 1000 && u < units.count - 1 { v /= 1000; u += 1 }
    return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
}

/// Progress on standard error: a redrawn bar with tensors, bytes, rate and ETA on a terminal; a plain
/// line every 10 % when piped (logs stay readable).
final class ProgressBar: @unchecked Sendable {
    private let label: String
    private let start = Date()
    private let isTTY = isatty(2) != 0
    private var lastDraw = Date.distantPast
    private var lastDecile = -1

    init(_ label: String) { self.label = label }

    func update(_ p: StreamProgress) {
        let elapsed = Date().timeIntervalSince(start)
        let frac = p.bytesTotal > 0 ? Double(p.bytesDone) / Double(p.bytesTotal) : Double(p.tensorsDone) / Double(max(p.tensorsTotal, 1))
        let rate = elapsed > 0 ? Double(p.bytesDone) / elapsed : 0
        let eta = frac > 0 ? elapsed * (1 - frac) / frac : 0
        let text = String(format: "%@ %3.0f%% | %d/%d tensors | %@ / %@ | %@/s | ETA %.0fs", label, frac * 100,
                          p.tensorsDone, p.tensorsTotal, formatBytes(p.bytesDone), formatBytes(p.bytesTotal), formatBytes(Int(rate)), eta)
        if isTTY {
            let now = Date()
            guard now.timeIntervalSince(lastDraw) > 0.1 || p.tensorsDone == p.tensorsTotal else { return }
            lastDraw = now
            let width = 24
            let filled = Int(frac * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            FileHandle.standardError.write(Data("\r\u{1B}[2K\(bar) \(text)".utf8))
            if p.tensorsDone == p.tensorsTotal { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            let decile = Int(frac * 10)
            if decile != lastDecile { lastDecile = decile; printErr(text) }
        }
    }
}
