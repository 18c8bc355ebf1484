// swift-tools-version:6.0
// A team's own package: its tasks, its worker executable, nothing copied from swift-celery.
//
// Copied out of the tree, point the dependency at a clone of swift-celery (a path or a git URL):
//     .package(name: "swift-celery", path: "../swift-celery"),
import PackageDescription

let package = Package(
    name: "report-tasks",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "report-worker", targets: ["report-worker"])
    ],
    dependencies: [
        .package(name: "swift-celery", path: "..")
    ],
    targets: [
        .target(
            name: "ReportTasks",
            dependencies: [
                .product(name: "Celery", package: "swift-celery"),
                .product(name: "JSON", package: "swift-celery"),
            ]
        ),
        .executableTarget(
            name: "report-worker",
            dependencies: [
                "ReportTasks",
                .product(name: "CeleryCLI", package: "swift-celery"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
