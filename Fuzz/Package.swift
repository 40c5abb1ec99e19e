// swift-tools-version: 6.0
// libFuzzer targets for Graft's parsers of untrusted files: a package of its own so that the main build
// never sees them. Built by `make fuzz-build` with address sanitizer and libFuzzer's coverage; each
// target's main hands its body to libFuzzer's driver (`FuzzDriver`). See RELIABILITY.md.
import PackageDescription

func fuzzTarget(_ name: String, _ deps: [String]) -> Target {
    .executableTarget(name: name, dependencies: ["FuzzDriver"] + deps.map { .product(name: $0, package: "main") })
}

let package = Package(
    name: "GraftFuzz",
    dependencies: [.package(name: "main", path: "..")],
    targets: [
        .target(name: "FuzzDriver"),
        fuzzTarget("fuzz-safetensors", ["GraftFormats", "GraftTensor"]),
        fuzzTarget("fuzz-gguf", ["GraftFormats", "GraftText", "GraftTensor"]),
        fuzzTarget("fuzz-tokenizer-json", ["GraftText"]),
        fuzzTarget("fuzz-tokenize", ["GraftText", "GraftFormats"]),
        fuzzTarget("fuzz-adapter-config", ["GraftFormats", "GraftAdapters"]),
        fuzzTarget("fuzz-merge-config", ["GraftMerging"]),
        fuzzTarget("fuzz-table", ["GraftData"]),
        fuzzTarget("fuzz-chat-template", ["GraftText", "GraftFormats"]),
        fuzzTarget("fuzz-openai-request", ["GraftAPI", "GraftText"]),
    ]
)
