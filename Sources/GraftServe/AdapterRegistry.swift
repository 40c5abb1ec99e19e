import GraftAPI
import Foundation
import GraftAdapters
import GraftFormats
import GraftModels
import GraftTensor

/// An adapter ready to serve: its updates fitted to the base's linear layers, by module path.
public struct ServedAdapter: Sendable {
    public let name: String
    /// Unique per loading (`name#serial`), so that a batch never mixes an adapter with its replacement.
    public internal(set) var id = ""
    public let path: String
    public let method: String
    public let updates: [String: any LayerUpdate]
    /// Its updates at sublayer sites (bottleneck adapters), checked against the base's layers.
    public let sublayers: SublayerUpdates
    /// Its prompt or prefix (prompt-tuning, prefix-tuning, EPT adapters), checked against the base's layout.
    public let virtualTokens: VirtualTokens?
    /// Bytes its tensors take in memory (float32).
    public let bytes: Int
    /// A sequence-classification adapter's head and class names (`modules_to_save`, labels.json).
    public let classifier: (head: Linear, labels: [String])?

    /// This adapter as one part of a request's mix, at weight `scale`.
    func part(scale: Float) -> AdapterMix.Part {
        AdapterMix.Part(name: name, id: id, updates: updates, sublayers: sublayers, virtualTokens: virtualTokens, scale: scale)
    }
}

/// The adapters a server knows by name: those under the adapters folder at start and those added at run
/// time. At most `capacity` stay in memory; the least recently used is dropped and read again from disk
/// when next asked for. Paths must lie under the adapters folder unless `allowAnyPath`.
public final class AdapterRegistry: @unchecked Sendable {
    struct Entry {
        let path: String
        var loaded: ServedAdapter?
        var lastUse: UInt64
        /// Which registration this is (a name removed and added again gets a new one).
        let serial: Int
    }

    public let root: String?
    public let allowAnyPath: Bool
    public let capacity: Int
    /// Fits a read adapter to the base (an error naming what does not fit).
    let prepare: @Sendable (String, any LoadedAdapter) throws -> ServedAdapter
    private var entries: [String: Entry] = [:]
    private var clock: UInt64 = 0
    /// Changes whenever an adapter is added or removed (what the routing cache is keyed by).
    private var generation = 0
    private let lock = NSLock()

    init(root: String?, allowAnyPath: Bool, capacity: Int, prepare: @escaping @Sendable (String, any LoadedAdapter) throws -> ServedAdapter) {
        self.root = root; self.allowAnyPath = allowAnyPath; self.capacity = max(1, capacity); self.prepare = prepare
    }

    /// Names must be usable as an OpenAI `model` value and a URL path component.
    static func checkName(_ name: String) throws {
        let ok = !name.isEmpty && name.count <= 128 && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.:".contains($0)) }
        guard ok, name != "auto" else {
            throw APIError.invalid("adapter name '\(name)' must be 1–128 letters, digits, '-', '_', '.' or ':' (and not 'auto')", param: "name")
        }
    }

    /// Every adapter folder directly under `root` (a folder holding `adapter_config.json`), by folder name;
    /// those that fail to load are returned with the reason instead of being registered.
    func scanRoot() -> [(name: String, problem: String)] {
        guard let root, let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return [] }
        var problems: [(String, String)] = []
        for name in names.sorted() where !name.hasPrefix(".") {
            let dir = (root as NSString).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("adapter_config.json")) else { continue }
            do { try add(name: name, path: dir, trusted: true) } catch { problems.append((name, (error as? APIError)?.message ?? "\(error)")) }
        }
        return problems
    }

    /// The real path of `path` (relative ones are under the adapters folder), checked against the policy
    /// unless `trusted` (the operator's own: found in the folder at start, or given on the command line).
    func resolvePath(_ path: String, trusted: Bool) throws -> String {
        let joined = path.hasPrefix("/") ? path : (root.map { ($0 as NSString).appendingPathComponent(path) } ?? path)
        guard let real = realpath(joined, nil) else { throw APIError.invalid("adapter path '\(path)' does not exist", param: "path") }
        defer { free(real) }
        let resolved = String(cString: real)
        if !allowAnyPath && !trusted {
            guard let root, let rootReal = realpath(root, nil) else {
                throw APIError.invalid("this server loads adapters only from its --adapters folder, and has none (start it with --allow-any-path to load from anywhere)", param: "path")
            }
            defer { free(rootReal) }
            let r = String(cString: rootReal)
            guard resolved.hasPrefix(r.hasSuffix("/") ? r : r + "/") else {
                throw APIError.invalid("adapter path '\(path)' is outside the adapters folder \(root) (start the server with --allow-any-path to allow it)", param: "path", status: 403)
            }
        }
        return resolved
    }

    /// Reads, checks and registers an adapter; an error (with the reason) leaves the registry unchanged.
    /// A run-time request's path must lie under the adapters folder unless `allowAnyPath`; `trusted`
    /// paths (the operator's) need not.
    public func add(name: String, path: String, trusted: Bool = false) throws {
        try Self.checkName(name)
        let resolved = try resolvePath(path, trusted: trusted)
        var adapter: ServedAdapter
        do { adapter = try prepare(name, try AdapterMethods.open(resolved)) } catch let e as APIError { throw e } catch {
            throw APIError.invalid("adapter '\(name)' cannot be served: \(error)", param: "path", code: "invalid_adapter")
        }
        lock.lock(); defer { lock.unlock() }
        guard entries[name] == nil else { throw APIError.invalid("an adapter named '\(name)' is already loaded (DELETE /v1/adapters/\(name) first)", param: "name", status: 409) }
        clock += 1
        generation += 1
        adapter.id = "\(name)#\(generation)"
        entries[name] = Entry(path: resolved, loaded: adapter, lastUse: clock, serial: generation)
        evictLocked(keeping: name)
    }

    /// Forgets an adapter; false when there was none of that name.
    public func remove(_ name: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard entries.removeValue(forKey: name) != nil else { return false }
        generation += 1
        return true
    }

    /// The names and the generation they belong to, read together.
    public var snapshot: (names: [String], generation: Int) {
        lock.lock(); defer { lock.unlock() }
        return (entries.keys.sorted(), generation)
    }

    public var names: [String] { lock.lock(); defer { lock.unlock() }; return entries.keys.sorted() }

    /// How many are in memory now.
    public var loadedCount: Int { lock.lock(); defer { lock.unlock() }; return entries.values.filter { $0.loaded != nil }.count }

    /// The adapter of that name, read again from disk if it was dropped; nil when the name is unknown.
    public func adapter(_ name: String) throws -> ServedAdapter? {
        lock.lock()
        guard var e = entries[name] else { lock.unlock(); return nil }
        clock += 1
        e.lastUse = clock
        entries[name] = e
        if let a = e.loaded { lock.unlock(); return a }
        lock.unlock()
        var a: ServedAdapter
        do { a = try prepare(name, try AdapterMethods.open(e.path)) } catch {
            throw APIError(status: 500, message: "adapter '\(name)' could not be read again from \(e.path): \(error)", type: "server_error")
        }
        // Read again as the registration `e` (its id): kept only if that registration is still the current one.
        a.id = "\(name)#\(e.serial)"
        lock.lock(); defer { lock.unlock() }
        if entries[name]?.serial == e.serial { entries[name]!.loaded = a; evictLocked(keeping: name) }
        return a
    }

    /// Drops the least recently used adapters from memory (not from the registry) down to `capacity`.
    private func evictLocked(keeping: String) {
        var loaded = entries.filter { $0.value.loaded != nil && $0.key != keeping }.sorted { $0.value.lastUse < $1.value.lastUse }
        while loaded.count + 1 > capacity, let oldest = loaded.first {
            entries[oldest.key]!.loaded = nil
            loaded.removeFirst()
        }
    }
}
