import Foundation
import GraftFormats

/// Resolves `--model`: a local HF folder, a `.gguf` file, or the short name of a model fetched by
/// `scripts/fetch-models` into `$GRAFT_HOME/models` (default `~/.cache/graft/models`).
public enum ModelLocator {
    public static let shortNames = ["minilm", "smollm2"]

    public static func resolve(_ spec: String) throws -> String {
        let fm = FileManager.default
        let expanded = (spec as NSString).expandingTildeInPath
        if fm.fileExists(atPath: expanded) { return expanded }
        if !spec.contains("/") {
            let p = GraftHome.path + "/models/" + spec
            if fm.fileExists(atPath: p) {
                // A fetched GGUF model is a folder holding one .gguf file.
                let ggufs = ((try? fm.contentsOfDirectory(atPath: p)) ?? []).filter { $0.hasSuffix(".gguf") }
                if ggufs.count == 1 && !fm.fileExists(atPath: p + "/config.json") { return p + "/" + ggufs[0] }
                return p
            }
            if shortNames.contains(spec) {
                throw ModelError("model '\(spec)' is not fetched yet (no \(p)): run scripts/fetch-models \(spec)")
            }
        }
        throw ModelError("model '\(spec)' not found: give a model folder, a .gguf file, or one of \(shortNames.joined(separator: ", ")) (fetched with scripts/fetch-models)")
    }
}
