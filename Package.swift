// swift-tools-version: 6.1
import PackageDescription

// Release builds use the host CPU's full instruction set (AVX-512, F16C): without it Swift emits
// baseline x86-64 and the f16 conversions and SIMD kernels run several times slower.
let nativeCPU: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", "native"], .when(configuration: .release)),
]

let package = Package(
    name: "Graft",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "graft", targets: ["graft"]),
        .library(name: "GraftMerging", targets: ["GraftMerging"]),
        // The parsers, for the fuzz targets (Fuzz/, a package of its own).
        .library(name: "GraftTensor", targets: ["GraftTensor"]),
        .library(name: "GraftFormats", targets: ["GraftFormats"]),
        .library(name: "GraftText", targets: ["GraftText"]),
        .library(name: "GraftAdapters", targets: ["GraftAdapters"]),
        .library(name: "GraftData", targets: ["GraftData"]),
        .library(name: "GraftAPI", targets: ["GraftAPI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // `graft serve`: the HTTP server (no default traits: swift-configuration is not needed) and the
        // Prometheus text of /metrics.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // BLAS + LAPACK: Debian's OpenBLAS on Linux (one library carries both), Accelerate on macOS.
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS",
                       providers: [.apt(["libopenblas-dev"])]),
        // Integer dot-product kernels (AVX-512 VNNI where the host has it; portable C otherwise).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-march=native"], .when(configuration: .release))]),
        .target(name: "GraftTensor",
                dependencies: [.target(name: "CBLAS", condition: .when(platforms: [.linux])), "CKernels"],
                swiftSettings: nativeCPU),
        .target(name: "GraftFormats", dependencies: ["GraftTensor", "CKernels", .product(name: "Yams", package: "Yams")],
                swiftSettings: nativeCPU),
        .target(name: "GraftText", dependencies: ["GraftFormats"], swiftSettings: nativeCPU),
        .target(name: "GraftData", dependencies: ["GraftTensor", "GraftFormats"], swiftSettings: nativeCPU),
        .target(name: "GraftModels", dependencies: ["GraftTensor", "GraftFormats", "GraftText"], swiftSettings: nativeCPU),
        .target(name: "GraftAdapters", dependencies: ["GraftTensor", "GraftFormats"],
                swiftSettings: nativeCPU),
        .target(name: "GraftMerging",
                dependencies: ["GraftTensor", "GraftFormats", "GraftAdapters"],
                swiftSettings: nativeCPU),
        .target(name: "GraftTraining",
                dependencies: ["GraftTensor", "GraftFormats", "GraftText", "GraftModels", "GraftAdapters", "GraftData"],
                swiftSettings: nativeCPU),
        .target(name: "GraftEval",
                dependencies: ["GraftTensor", "GraftFormats", "GraftText", "GraftModels", "GraftAdapters", "GraftData", "GraftTraining"],
                swiftSettings: nativeCPU),
        .target(name: "GraftPipeline",
                dependencies: ["GraftTensor", "GraftFormats", "GraftText", "GraftModels", "GraftAdapters", "GraftData", "GraftTraining",
                               "GraftMerging", "GraftEval"],
                swiftSettings: nativeCPU),
        // The benchmarks' workloads and peer drivers (`graft bench`).
        .target(name: "GraftBench",
                dependencies: ["GraftTensor", "GraftFormats", "GraftText", "GraftModels", "GraftAdapters", "GraftData", "GraftTraining", "GraftHTTP"],
                swiftSettings: nativeCPU),
        // The OpenAI API's requests and errors, parsed and checked without a server (fuzzed on their own).
        .target(name: "GraftAPI", dependencies: ["GraftFormats", "GraftText", "GraftModels"], swiftSettings: nativeCPU),
        // `graft serve`: many adapters on one base behind an OpenAI-compatible HTTP API.
        .target(name: "GraftServe",
                dependencies: ["GraftAPI", "GraftTensor", "GraftFormats", "GraftText", "GraftModels", "GraftAdapters", "GraftTraining", "GraftEval",
                               .product(name: "Hummingbird", package: "hummingbird"),
                               .product(name: "Prometheus", package: "swift-prometheus")],
                swiftSettings: nativeCPU),
        .executableTarget(name: "graft",
                          dependencies: ["CKernels", "GraftTensor", "GraftFormats", "GraftAdapters", "GraftMerging", "GraftText", "GraftModels",
                                         "GraftData", "GraftTraining", "GraftEval", "GraftPipeline", "GraftBench", "GraftServe",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: nativeCPU),
        // A plain HTTP/1.1 client and a server-process handle for `graft bench serve` and the server tests.
        .target(name: "GraftHTTP", dependencies: ["GraftFormats"]),
        // What the test targets share (fixture and model locations, temporary folders).
        .target(name: "GraftTestSupport", dependencies: ["GraftFormats"], path: "Tests/GraftTestSupport"),
        .testTarget(name: "GraftTensorTests", dependencies: ["GraftTensor"]),
        .testTarget(name: "GraftFormatsTests", dependencies: ["GraftFormats", "GraftTestSupport"]),
        .testTarget(name: "GraftModelsTests", dependencies: ["GraftModels", "GraftText", "GraftFormats", "GraftAdapters", "GraftTestSupport"]),
        .testTarget(name: "GraftTrainingTests",
                    dependencies: ["GraftTraining", "GraftEval", "GraftPipeline", "GraftMerging", "GraftData", "GraftModels", "GraftAdapters", "GraftFormats", "GraftText", "graft",
                                   "GraftTestSupport"]),
        .testTarget(name: "GraftServeTests",
                    dependencies: ["GraftServe", "GraftHTTP", "GraftEval", "GraftModels", "GraftAdapters", "GraftFormats", "GraftText", "graft", "GraftTestSupport"]),
        .testTarget(name: "GraftMergingTests",
                    dependencies: ["GraftMerging", "GraftFormats", "GraftAdapters", "graft", "GraftTestSupport"]),
    ]
)
