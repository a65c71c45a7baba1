// swift-tools-version: 6.0
import Foundation
import PackageDescription

// Release builds target the build machine's CPU (AVX2/FMA here): the batched kernels are 3-5x
// faster than with the baseline SSE target. MPCD_PORTABLE=1 builds for the baseline x86-64/arm64
// CPU instead, for binaries copied to another machine (see docs/benchmarks.md).
let portable = ProcessInfo.processInfo.environment["MPCD_PORTABLE"] == "1"
let speed: [SwiftSetting] = [.unsafeFlags((portable ? [] : ["-target-cpu", "native", "-DMPCD_FMA"]) + ["-Xcc", "-fno-math-errno"], .when(configuration: .release))]

let package = Package(
    name: "mpcd",
    products: [
        .library(name: "Models", targets: ["Models"]),
        .library(name: "Planners", targets: ["Planners"]),
        .executable(name: "mpcd", targets: ["mpcd"]),
        .executable(name: "mpcd-bench", targets: ["mpcd-bench"]),
        .executable(name: "mpcctl", targets: ["mpcctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        // MuJoCo's headers and a guarded wrapper of the calls mpcd makes (Debian's libmujoco-dev)
        .target(name: "CMuJoCo", linkerSettings: [.linkedLibrary("mujoco")]),
        // the model plug-in ABI (a header) for robots compiled into a shared library
        .target(name: "CPluginABI"),
        .target(name: "Models", dependencies: ["ConfigFiles", "COpenBLAS", "CMuJoCo", "CPluginABI"], swiftSettings: speed),
        .target(name: "Planners", dependencies: ["Models"], swiftSettings: speed),
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        .target(name: "CSystemShims"),
        // TOML, bounded file reading and safe writing: shared by the models and mpcctl
        .target(name: "ConfigFiles"),
        // the one wrapper of libzmq
        .target(name: "ZeroMQ", dependencies: ["CZeroMQ"]),
        // the control socket's requests and replies, typed on both ends (mpcd and mpcctl)
        .target(name: "ControlProtocol", dependencies: ["ConfigFiles"]),
        // Arrow's IPC stream format, written and read: the tick recordings
        .target(name: "ArrowIPC"),
        .target(
            name: "Daemon",
            dependencies: [
                "Models", "Planners", "ZeroMQ", "ControlProtocol", "CSystemShims", "ArrowIPC",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: speed
        ),
        .executableTarget(
            name: "mpcd",
            dependencies: ["Daemon", "Models", "Planners", "CSystemShims", .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: speed
        ),
        .target(name: "FuzzSupport", dependencies: ["Models", "Planners", "Daemon", "ControlProtocol", "ArrowIPC"]),
        .executableTarget(
            name: "mpcctl",
            // no planner, OpenBLAS or MuJoCo: the control protocol, the ZeroMQ wrapper and TOML only
            dependencies: ["ControlProtocol", "ZeroMQ", "ConfigFiles", "CSystemShims", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "mpcd-bench",
            dependencies: ["Models", "Planners", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: speed
        ),
        .testTarget(name: "ArrowIPCTests", dependencies: ["ArrowIPC"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models"], exclude: ["Fixtures"]),
        .testTarget(name: "PlannersTests", dependencies: ["Models", "Planners"]),
        .testTarget(name: "DaemonTests", dependencies: ["Daemon", "Models", "Planners", "FuzzSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
