// swift-tools-version:6.0
import PackageDescription

// Its own package so that CI, which builds the root package, never builds or runs it.
let package = Package(
    name: "RedisClientBenchmark",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-celery", path: "../..")
    ],
    targets: [
        .executableTarget(
            name: "RedisClientBenchmark",
            dependencies: [.product(name: "Redis", package: "swift-celery")]
        )
    ],
    swiftLanguageModes: [.v6]
)
