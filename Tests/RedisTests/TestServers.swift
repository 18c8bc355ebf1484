import Foundation
import Logging
import Redis

/// The servers `scripts/test-redis.sh` starts for the test run, read from the environment.
enum TestServers {
    static let env = ProcessInfo.processInfo.environment
    static var plainURL: String? { env["SWIFT_CELERY_TEST_REDIS_URL"] }
    static var authURL: String? { env["SWIFT_CELERY_TEST_REDIS_AUTH_URL"] }
    static var authPassword: String? { env["SWIFT_CELERY_TEST_REDIS_AUTH_PASSWORD"] }
    static var authPort: Int? { env["SWIFT_CELERY_TEST_REDIS_AUTH_PORT"].flatMap(Int.init) }
    static var tlsURL: String? { env["SWIFT_CELERY_TEST_REDIS_TLS_URL"] }
    static var tlsDirectory: String? { env["SWIFT_CELERY_TEST_TLS_DIR"] }
    static var redisServer: String { env["SWIFT_CELERY_TEST_REDIS_SERVER"] ?? "/usr/bin/redis-server" }

    static var hasPlain: Bool { plainURL != nil }
    static var hasAuth: Bool { authURL != nil && authPassword != nil }
    static var hasTLS: Bool { tlsURL != nil && tlsDirectory != nil }

    static let logger: Logger = {
        var logger = Logger(label: "redis-tests")
        logger.logLevel = .critical
        return logger
    }()

    static func plainClient() throws -> RedisClient {
        RedisClient(configuration: try RedisConfiguration(url: plainURL!), logger: logger)
    }

    /// A key prefix unique to one test, so tests share a server without FLUSHALL.
    static func uniquePrefix(_ name: String = #function) -> String {
        "test:\(name.prefix(while: { $0 != "(" })):\(UUID().uuidString.prefix(8)):"
    }

    /// A free loopback port, found by binding port 0.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A redis-server of the test's own, so the test can kill and restart it.
final class OwnRedisServer: @unchecked Sendable {
    // Only touched from the test that owns it, never concurrently.
    let port: Int
    let directory: URL
    private var process: Process?

    init() throws {
        port = TestServers.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("swift-celery-redis-\(port)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    var url: String { "redis://127.0.0.1:\(port)/0" }

    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestServers.redisServer)
        process.arguments = [
            "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory.path,
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        for _ in 0..<100 {
            if let connection = try? await RedisConnection.connect(
                configuration: try RedisConfiguration(url: url),
                logger: TestServers.logger
            ) {
                await connection.close()
                return
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw RedisError(.connectionRefused, "own redis-server on port \(port) did not start")
    }

    func kill() {
        guard let process else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(at: directory)
    }
}
