// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets, in their own package so that the root package's `swift build` never builds them.
// Build and run with scripts/fuzz.sh (it passes -sanitize=fuzzer,address and -parse-as-library).
//
// FuzzTaskMessage compiles the message decoder (Sources/CeleryProtocol/TaskMessage.swift, MessageCompression.swift,
// PythonException.swift and Sources/Celery/TaskArgument.swift, linked here as symbolic links: the same files, not
// copies) without the rest of the package, so the fuzz build does not need NIO's TLS stack.
let package = Package(
    name: "Fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-celery", path: ".."),
        .package(url: "https://github.com/swift-extras/swift-extras-base64.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
    ],
    targets: [
        .target(name: "FuzzDriver"),
        // The system libraries of CeleryProtocol/MessageCompression.swift under another module name (two packages
        // cannot both have a CCompression target); FUZZING makes that file import this one.
        .systemLibrary(name: "CFuzzCompression"),
        .executableTarget(
            name: "FuzzRESP",
            dependencies: [
                "FuzzDriver",
                .product(name: "RESP", package: "swift-celery"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzJSON",
            dependencies: ["FuzzDriver", .product(name: "JSON", package: "swift-celery")]
        ),
        .executableTarget(
            name: "FuzzTaskMessage",
            dependencies: [
                "FuzzDriver",
                "CFuzzCompression",
                .product(name: "JSON", package: "swift-celery"),
                .product(name: "ExtrasBase64", package: "swift-extras-base64"),
            ],
            swiftSettings: [.define("FUZZING")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
