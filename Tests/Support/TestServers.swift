import Foundation
import Logging
import NIOCore
import NIOPosix
import Redis

/// The servers `scripts/test-redis.sh` starts for the test run, read from the environment.
public enum TestServers {
    public static let env = ProcessInfo.processInfo.environment
    public static var plainURL: String? { env["SWIFT_CELERY_TEST_REDIS_URL"] }
    public static var authURL: String? { env["SWIFT_CELERY_TEST_REDIS_AUTH_URL"] }
    public static var authPassword: String? { env["SWIFT_CELERY_TEST_REDIS_AUTH_PASSWORD"] }
    public static var authPort: Int? { env["SWIFT_CELERY_TEST_REDIS_AUTH_PORT"].flatMap(Int.init) }
    public static var tlsURL: String? { env["SWIFT_CELERY_TEST_REDIS_TLS_URL"] }
    public static var tlsDirectory: String? { env["SWIFT_CELERY_TEST_TLS_DIR"] }
    public static var tlsPort: Int? { env["SWIFT_CELERY_TEST_REDIS_TLS_PORT"].flatMap(Int.init) }
    /// Whether the TLS server listens on `[::1]` too.
    public static var tlsIPv6: Bool { env["SWIFT_CELERY_TEST_REDIS_TLS_IPV6"] == "1" }
    /// A TLS server whose certificate (same CA) names neither localhost nor a loopback address.
    public static var tlsWrongNamePort: Int? { env["SWIFT_CELERY_TEST_REDIS_TLS_WRONG_NAME_PORT"].flatMap(Int.init) }
    /// kombu's URL of the Sentinel deployment (master password in it; no master name, no sentinel password).
    public static var sentinelURL: String? { env["SWIFT_CELERY_TEST_SENTINEL_URL"] }
    public static var sentinelMasterName: String? { env["SWIFT_CELERY_TEST_SENTINEL_MASTER_NAME"] }
    /// The sentinels' own password (`requirepass` in sentinel.conf).
    public static var sentinelPassword: String? { env["SWIFT_CELERY_TEST_SENTINEL_PASSWORD"] }
    public static var sentinelMasterPassword: String? { env["SWIFT_CELERY_TEST_SENTINEL_MASTER_PASSWORD"] }
    /// The sentinels' ports.
    public static var sentinelPorts: [Int] {
        (env["SWIFT_CELERY_TEST_SENTINEL_PORTS"] ?? "").split(separator: " ").compactMap { Int($0) }
    }
    /// The ports of the two data servers (the first master, then the first replica).
    public static var sentinelRedisPorts: [Int] {
        (env["SWIFT_CELERY_TEST_SENTINEL_REDIS_PORTS"] ?? "").split(separator: " ").compactMap { Int($0) }
    }
    /// One TLS-only sentinel that names the TLS server (by IP) as `tlsprimary`; the CA is in the URL.
    public static var sentinelTLSURL: String? { env["SWIFT_CELERY_TEST_SENTINEL_TLS_URL"] }
    public static var hasSentinel: Bool { sentinelURL != nil && sentinelMasterName != nil && sentinelPassword != nil }
    /// The Sentinel URL with the master name and the sentinels' password in its query, as a user would write it.
    public static var sentinelFullURL: String? {
        guard let url = sentinelURL, let name = sentinelMasterName, let password = sentinelPassword else { return nil }
        return url + "?master_name=\(name)&sentinel_password=\(password)"
    }
    public static var redisServer: String { env["SWIFT_CELERY_TEST_REDIS_SERVER"] ?? "/usr/bin/redis-server" }

    public static var hasPlain: Bool { plainURL != nil }
    public static var hasAuth: Bool { authURL != nil && authPassword != nil }
    public static var hasTLS: Bool { tlsURL != nil && tlsDirectory != nil }

    public static let logger: Logger = {
        var logger = Logger(label: "swift-celery-tests")
        logger.logLevel = .critical
        return logger
    }()

    public static func plainClient() throws -> RedisClient {
        RedisClient(configuration: try RedisConfiguration(url: plainURL!), logger: logger)
    }

    /// A key prefix unique to one test, so tests share a server without FLUSHALL.
    public static func uniquePrefix(_ name: String = #function) -> String {
        "test:\(name.prefix(while: { $0 != "(" })):\(UUID().uuidString.prefix(8)):"
    }

    /// A loopback port nothing listens on: bound to learn a free number, then closed.
    public static func refusedPort() async throws -> Int {
        freePort()
    }

    /// A free loopback port, found by binding port 0.
    public static func freePort() -> Int {
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
public final class OwnRedisServer: @unchecked Sendable {
    // Only touched from the test that owns it, never concurrently.
    public let port: Int
    let directory: URL
    /// With AOF on (`appendfsync always`), data survives a kill -9 of the server.
    let persistent: Bool
    private var process: Process?

    public init(persistent: Bool = false) throws {
        self.persistent = persistent
        port = TestServers.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("swift-celery-redis-\(port)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    public var url: String { "redis://127.0.0.1:\(port)/0" }

    public func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestServers.redisServer)
        process.arguments = [
            "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--dir", directory.path,
        ]
        process.arguments! += persistent ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]
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

    public func kill() {
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

/// A TCP server on loopback that is not Redis: it answers every read with `reply(bytes)` and closes, or, when
/// `reply` returns nil, says nothing and keeps the connection open.
public struct FakeServer: Sendable {
    public let channel: Channel
    public var port: Int { channel.localAddress!.port! }

    public static func start(reply: @escaping @Sendable (ByteBuffer) -> ByteBuffer?) async throws -> FakeServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return FakeServer(channel: channel)
    }

    public func close() async throws { try await channel.close() }

    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let reply: @Sendable (ByteBuffer) -> ByteBuffer?
        init(reply: @escaping @Sendable (ByteBuffer) -> ByteBuffer?) { self.reply = reply }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let bytes = reply(unwrapInboundIn(data)) else { return }
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
