import Foundation
import GraftFormats
import GraftTensor

/// The non-tensor files of an output model folder: config.json with the dtype updated, the tokenizer
/// files of the tokenizer source, and a model card.
public enum MergeOutput {
    /// Tokenizer and generation files copied from the tokenizer source when present.
    public static let tokenizerFiles = [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
        "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja", "generation_config.json",
    ]

    public static func writeConfig(from source: Checkpoint, dtype: DType?, to dir: OutputDirectory,
                                   edit: ((inout HFConfig) -> Void)? = nil) throws {
        guard var cfg = try source.config() else { return }
        if let dtype { cfg.setDType(dtype) }
        edit?(&cfg)
        try cfg.write(to: dir.path("config.json"))
    }

    public static func copyTokenizer(from folder: String?, to dir: OutputDirectory) throws {
        guard let folder else { return }
        let fm = FileManager.default
        for f in tokenizerFiles {
            let src = (folder as NSString).appendingPathComponent(f)
            if fm.fileExists(atPath: src) {
                do { try fm.copyItem(atPath: src, toPath: dir.path(f)) } catch {
                    throw FormatError(src, nil, "cannot copy: \(error.localizedDescription)")
                }
            }
        }
    }

    public static func writeModelCard(_ text: String, to dir: OutputDirectory) throws {
        try FileBytes.write(Data(text.utf8), to: dir.path("README.md"))
    }

    static func mergeCard(plan: MergePlan) -> String {
        let c = plan.config
        var s = "---\nlibrary_name: transformers\ntags:\n- graft\n- merge\n"
        if let b = c.baseModel { s += "base_model:\n- \(b.name)\n" }
        s += "---\n# Merged model\n\nMade with Graft (`graft merge`), method **\(plan.method.name)**"
        s += " (\(plan.method.summary)).\n\n"
        if let b = c.baseModel { s += "Base model: `\(b.name)`\n\n" }
        s += "## Models merged\n\n" + c.models.map { "- `\($0.model.name)`" }.joined(separator: "\n") + "\n\n"
        s += "## Configuration\n\n```yaml\n\(c.text.hasSuffix("\n") ? c.text : c.text + "\n")```\n"
        return s
    }
}
