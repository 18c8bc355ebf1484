// swift-tools-version:6.0
// Celery 5.7's integration tasks (t/integration/tasks.py) ported to Swift, in a package of their own that depends on
// swift-celery as a user's package does: the worker Celery's own integration suite runs against
// (Tests/CelerySuite/run.sh).
import PackageDescription

let package = Package(
    name: "celery-suite",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "celery-suite-worker", targets: ["celery-suite-worker"])
    ],
    dependencies: [
        .package(name: "swift-celery", path: "../..")
    ],
    targets: [
        .executableTarget(
            name: "celery-suite-worker",
            dependencies: [
                .product(name: "Celery", package: "swift-celery"),
                .product(name: "CeleryCLI", package: "swift-celery"),
                .product(name: "JSON", package: "swift-celery"),
                .product(name: "RESP", package: "swift-celery"),
            ]
        )
    ],
    swiftLanguageModes: [.v6]
)
