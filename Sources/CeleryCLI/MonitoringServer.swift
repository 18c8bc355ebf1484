import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// A small HTTP server for operators: `GET /metrics` (Prometheus text format) and `GET /healthz` (200 while the
/// worker consumes, 503 otherwise: starting, Redis unreachable, or shutting down).
///
/// Put it before the worker in a `ServiceGroup`: services stop in reverse order, so it keeps answering (503)
/// while the worker drains, and stops after it.
public final class MonitoringServer: Service, Sendable {
    /// The address to listen on (`0.0.0.0` for every interface).
    public let host: String
    /// The port to listen on; 0 picks a free one (see `boundPort`).
    public let port: Int
    let worker: Worker
    let registry: PrometheusCollectorRegistry
    let logger: Logger
    private let bound = Atomic<Int>(0)

    /// How long one connection may take to send its request and get the answer.
    public let connectionDeadline: Duration

    /// Serves `worker`'s metrics: those of its `WorkerMetrics(registry:)`, or an empty registry's.
    public init(
        host: String,
        port: Int,
        worker: Worker,
        connectionDeadline: Duration = .seconds(10),
        logger: Logger
    ) {
        self.host = host
        self.port = port
        self.connectionDeadline = connectionDeadline
        self.worker = worker
        self.registry = worker.metrics.registry ?? PrometheusCollectorRegistry()
        self.logger = logger
    }

    /// The port the server listens on once it is up; 0 before.
    public var boundPort: Int { bound.load(ordering: .relaxed) }

    /// Listens until graceful shutdown, serving each connection in a child task.
    public func run() async throws {
        let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                            wrappingChannelSynchronously: channel
                        )
                    }
                }
        } catch {
            throw MonitoringServerError(
                description: "cannot serve metrics on \(host):\(port) (--metrics-host, --metrics-port): \(error)"
            )
        }
        let port = server.channel.localAddress?.port ?? port
        bound.store(port, ordering: .relaxed)
        logger.info("monitoring endpoint listening", metadata: ["http.host": "\(host)", "http.port": "\(port)"])
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { connections in
                    for try await connection in connections {
                        group.addTask { await self.serveWithDeadline(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    /// Serves one connection, giving up after `connectionDeadline`, so a client that connects and sends nothing
    /// cannot hold up the shutdown.
    private func serveWithDeadline(
        _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>
    ) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.serve(connection) }
            group.addTask { try? await Task.sleep(for: self.connectionDeadline) }
            await group.next()
            group.cancelAll()
            connection.channel.close(promise: nil)
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                for try await part in inbound {
                    switch part {
                    case .head(let request): head = request
                    case .body: break
                    case .end:
                        guard let request = head else { continue }
                        let (status, contentType, body) = await respond(to: request)
                        var headers = HTTPHeaders()
                        headers.add(name: "Content-Type", value: contentType)
                        headers.add(name: "Content-Length", value: String(body.count))
                        // One request per connection, so a graceful shutdown never waits on an idle keep-alive.
                        headers.add(name: "Connection", value: "close")
                        try await outbound.write(
                            .head(HTTPResponseHead(version: request.version, status: status, headers: headers))
                        )
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
                        try await outbound.write(.end(nil))
                        return
                    }
                }
            }
        } catch {
            logger.debug("monitoring connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// The answer to one request: status, content type, body.
    func respond(to request: HTTPRequestHead) async -> (HTTPResponseStatus, String, [UInt8]) {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        guard request.method == .GET else {
            return (.methodNotAllowed, "text/plain; charset=utf-8", Array("only GET\n".utf8))
        }
        switch path {
        case "/metrics":
            await worker.collectMetrics()
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", registry.emitToBuffer())
        case "/healthz":
            if worker.isConsuming {
                return (.ok, "text/plain; charset=utf-8", Array("ok\n".utf8))
            }
            let reason = worker.isReady ? "Redis unreachable" : "not consuming (starting or shutting down)"
            return (.serviceUnavailable, "text/plain; charset=utf-8", Array("\(reason)\n".utf8))
        default:
            return (.notFound, "text/plain; charset=utf-8", Array("not found; try /metrics or /healthz\n".utf8))
        }
    }
}

/// Why the monitoring endpoint cannot run (the address is taken or invalid).
public struct MonitoringServerError: Error, CustomStringConvertible {
    public var description: String
}
