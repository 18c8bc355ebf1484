// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-celery",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "swift-celery", targets: ["swift-celery"]),
        .library(name: "CeleryCLI", targets: ["CeleryCLI"]),
        .library(name: "Celery", targets: ["Celery"]),
        .library(name: "CeleryClient", targets: ["CeleryClient"]),
        .library(name: "Beat", targets: ["Beat"]),
        .library(name: "Redis", targets: ["Redis"]),
        .library(name: "JSON", targets: ["JSON"]),
        .library(name: "RESP", targets: ["RESP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swift-extras/swift-extras-base64.git", from: "1.0.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CJansson",
            pkgConfig: "jansson",
            providers: [.apt(["libjansson-dev"])]
        ),
        // glibc's malloc.h (malloc_trim), which Swift's Glibc module leaves out.
        .systemLibrary(name: "CMalloc"),
        // zlib, libbz2 and liblzma: kombu's message compression (CeleryProtocol/MessageCompression.swift).
        .systemLibrary(
            name: "CCompression",
            providers: [.apt(["zlib1g-dev", "libbz2-dev", "liblzma-dev"])]
        ),
        .target(
            name: "JanssonArena",
            dependencies: ["CJansson"]
        ),
        .target(
            name: "JSON",
            dependencies: [
                "CJansson",
                "JanssonArena",
                .product(name: "OrderedCollections", package: "swift-collections"),
            ]
        ),
        .target(
            name: "RESP",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(
            name: "Redis",
            dependencies: [
                "RESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // Celery's wire values: task messages, signatures, events, control requests, results' states. No NIO, no
        // Redis.
        .target(
            name: "CeleryProtocol",
            dependencies: [
                "JSON",
                "CCompression",
                .product(name: "ExtrasBase64", package: "swift-extras-base64"),
            ]
        ),
        // Everything that knows kombu's keys on Redis or runs Lua there: broker, result store, chords,
        // revocations, rate limiter, events, the idle watchers.
        .target(
            name: "CeleryRedis",
            dependencies: [
                "CeleryProtocol",
                "JSON",
                "Redis",
                "RESP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // Page and heap tuning for long-running processes (the worker and beat): operator concerns, no Celery.
        .target(
            name: "ProcessTuning",
            dependencies: ["CMalloc", .product(name: "Logging", package: "swift-log")]
        ),
        // The worker and the handler API a team's tasks are written against.
        .target(
            name: "Celery",
            dependencies: [
                "CeleryProtocol",
                "CeleryRedis",
                "CeleryClient",
                "ProcessTuning",
                "JSON",
                "Redis",
                "RESP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ExtrasBase64", package: "swift-extras-base64"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Sending tasks and canvas from Swift, and reading results.
        .target(
            name: "CeleryClient",
            dependencies: [
                "CeleryProtocol",
                "CeleryRedis",
                "JSON",
                "Redis",
                "RESP",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Tasks",
            dependencies: ["Celery", "RESP"],
            path: "tasks",
            exclude: ["python"]
        ),
        .target(
            name: "Beat",
            dependencies: [
                "CeleryProtocol",
                "ProcessTuning",
                "JSON",
                "Redis",
                "RESP",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The command line as a library: a package's own executable calls `SwiftCelery.main` with its tasks.
        .target(
            name: "CeleryCLI",
            dependencies: [
                "Beat",
                "Celery",
                "CeleryClient",
                "CeleryProtocol",
                "CeleryRedis",
                "ProcessTuning",
                "Redis",
                "JSON",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The worker's per-task CPU path without Redis, for Benchmarks/hotpath.sh: not part of the library.
        .target(
            name: "CeleryHotPath",
            dependencies: [
                "Celery",
                "CeleryProtocol",
                "CeleryRedis",
                "JSON",
                "Redis",
                "RESP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ExtrasBase64", package: "swift-extras-base64"),
            ]
        ),
        .executableTarget(
            name: "swift-celery",
            dependencies: [
                "CeleryCLI",
                "Celery",
                "CeleryHotPath",
                "Tasks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "TestSupport",
            dependencies: [
                "Redis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/Support"
        ),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(
            name: "RESPTests",
            dependencies: ["RESP", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "RedisTests",
            dependencies: [
                "Redis", "RESP", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "CeleryTests",
            dependencies: [
                "Celery", "CeleryCLI", "CeleryClient", "CeleryProtocol", "CeleryRedis", "CeleryHotPath",
                "ProcessTuning", "Tasks", "JSON", "Redis", "RESP", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "CeleryCLITests",
            dependencies: [
                "CeleryCLI", "Celery", "JSON",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "BeatTests",
            dependencies: ["Beat", "CeleryProtocol", "JSON", "Redis", "RESP", "TestSupport"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
