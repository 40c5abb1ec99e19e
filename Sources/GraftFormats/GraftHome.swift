import Foundation

/// Graft's folder for fetched models, data, tuning and work folders: `$GRAFT_HOME`, else
/// `$XDG_CACHE_HOME/graft`, else `$HOME/.cache/graft` — the order `scripts/fetch-models` and
/// `scripts/fetch-data` use. `$HOME` as set, not the passwd entry (they differ in containers and CI);
/// the passwd home only when `$HOME` is unset. An empty variable counts as unset, as in the scripts.
public enum GraftHome {
    public static var path: String { path(ProcessInfo.processInfo.environment) }

    public static func path(_ env: [String: String]) -> String {
        func set(_ k: String) -> String? { env[k].flatMap { $0.isEmpty ? nil : $0 } }
        if let g = set("GRAFT_HOME") { return g }
        if let x = set("XDG_CACHE_HOME") { return x + "/graft" }
        return (set("HOME") ?? NSHomeDirectory()) + "/.cache/graft"
    }
}
