import Foundation
import GraftFormats

/// How to build a new LoRA (or DoRA) adapter, with PEFT's meanings: rank r, alpha (scaling α/r, or
/// α/√r with rsLoRA), dropout on the adapter's input, target modules by name or pattern, layers to
/// transform. `init` options follow PEFT's `LoraConfig`.
public struct LoRAConfig: Sendable, Equatable {
    public var rank: Int
    public var alpha: Double
    public var dropout: Double = 0
    public var useRSLoRA = false
    public var useDoRA = false
    /// Module-name suffixes (`query`, `self_attn.q_proj`), `all-linear`, or one regular expression
    /// matched against the whole module path (PEFT: a string `target_modules` is a regex).
    public var targetModules: [String]
    public var targetRegex: String? = nil
    /// Only these layer indices (nil: every layer).
    public var layersToTransform: [Int]? = nil

    public init(rank: Int, alpha: Double, targetModules: [String]) {
        self.rank = rank; self.alpha = alpha; self.targetModules = targetModules
    }

    /// No low-rank modules at all (targets "none"): only fully trained modules such as a classifier
    /// head — a linear probe on frozen features.
    public var headOnly: Bool { targetModules.isEmpty && targetRegex == nil }

    public var scaling: Double { useRSLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank) }

    public func validate() throws {
        guard rank > 0 else { throw LoRAError("LoRA rank must be a positive integer (got \(rank))") }
        guard alpha > 0, alpha.isFinite else { throw LoRAError("lora_alpha must be positive (got \(alpha))") }
        guard dropout >= 0 && dropout < 1 else { throw LoRAError("lora_dropout must be in [0, 1) (got \(dropout))") }
    }

    /// The modules of `available` (module paths of a model's linear layers) this config targets. An
    /// entry that matches nothing is an error that lists the model's module names.
    public func targets(in available: [String]) throws -> [String] {
        func layerIndex(_ path: String) -> Int? {
            let parts = path.split(separator: ".")
            for (i, p) in parts.enumerated() where (p == "layer" || p == "layers") && i + 1 < parts.count { return Int(parts[i + 1]) }
            return nil
        }
        var chosen: [String] = []
        if let re = targetRegex {
            let regex: NSRegularExpression
            do { regex = try NSRegularExpression(pattern: "^(?:" + re + ")$") } catch { throw LoRAError("target_modules regex '\(re)' is invalid: \(error)") }
            chosen = available.filter { regex.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) != nil }
            guard !chosen.isEmpty else { throw LoRAError("target_modules regex '\(re)' matches none of the model's modules (\(Self.distinctNames(available)))") }
        } else if targetModules == ["all-linear"] {
            chosen = available
        } else {
            for t in targetModules {
                let hit = available.filter { $0 == t || $0.hasSuffix("." + t) }
                guard !hit.isEmpty else {
                    throw LoRAError("target module '\(t)' is not a linear layer of this model; its modules are: \(Self.distinctNames(available))")
                }
                chosen += hit
            }
        }
        if let layers = layersToTransform {
            chosen = chosen.filter { layerIndex($0).map(layers.contains) ?? false }
            guard !chosen.isEmpty else { throw LoRAError("layers_to_transform \(layers) leaves no target module") }
        }
        return available.filter(Set(chosen).contains)
    }

    /// The per-layer module names (`attention.self.query`, …) without layer indices, for error messages.
    static func distinctNames(_ paths: [String]) -> String {
        var seen: [String] = []
        for p in paths {
            let parts = p.split(separator: ".")
            let tail = parts.firstIndex { Int($0) != nil }.map { parts[($0 + 1)...].joined(separator: ".") } ?? p
            if !seen.contains(tail) { seen.append(tail) }
        }
        return seen.joined(separator: ", ")
    }
}
