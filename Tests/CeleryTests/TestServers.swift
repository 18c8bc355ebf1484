import Foundation
import Logging
import NIOCore
import NIOPosix

/// The servers `scripts/test-redis.sh` starts for the test run, read from the environment.
enum TestServers {
    static let env = ProcessInfo.processInfo.environment
    static var plainURL: String? { env["SWIFT_CELERY_TEST_REDIS_URL"] }
    static var authPassword: String? { env["SWIFT_CELERY_TEST_REDIS_AUTH_PASSWORD"] }
    static var authPort: Int? { env["SWIFT_CELERY_TEST_REDIS_AUTH_PORT"].flatMap(Int.init) }
    static var tlsURL: String? { env["SWIFT_CELERY_TEST_REDIS_TLS_URL"] }
    static var tlsDirectory: String? { env["SWIFT_CELERY_TEST_TLS_DIR"] }

    static var hasPlain: Bool { plainURL != nil }
    static var hasAuth: Bool { authPort != nil && authPassword != nil }
    static var hasTLS: Bool { tlsURL != nil && tlsDirectory != nil }

    static let logger: Logger = {
        var logger = Logger(label: "celery-tests")
        logger.logLevel = .critical
        return logger
    }()

    /// A loopback port nothing listens on: bound to learn a free number, then closed.
    static func refusedPort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }
}

/// A TCP server on loopback that is not Redis: it answers every read with `reply(bytes)` and closes, or, when
/// `reply` returns nil, says nothing and keeps the connection open.
struct FakeServer {
    let channel: Channel
    var port: Int { channel.localAddress!.port! }

    static func start(reply: @escaping @Sendable (ByteBuffer) -> ByteBuffer?) async throws -> FakeServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return FakeServer(channel: channel)
    }

    func close() async throws { try await channel.close() }

    final class Handler: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let reply: @Sendable (ByteBuffer) -> ByteBuffer?
        init(reply: @escaping @Sendable (ByteBuffer) -> ByteBuffer?) { self.reply = reply }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let bytes = reply(unwrapInboundIn(data)) else { return }
            context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in context.close(promise: nil) }
        }
    }
}
