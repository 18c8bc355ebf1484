import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RESP
import Synchronization

/// One connection to Redis: commands are pipelined (many in flight, replies matched in order).
///
/// Connect with ``connect(configuration:eventLoopGroup:logger:)``. The connection authenticates (`HELLO 3` with
/// AUTH and SETNAME, falling back to RESP2 `AUTH` on servers older than 6), selects the database, and from then on
/// every command has a deadline: a command with no reply by then closes the connection and fails everything in
/// flight. Cancelling a caller of a blocking command closes the connection too (the server cannot be told to
/// stop waiting); cancelling other callers only stops them waiting.
public final class RedisConnection: Sendable {
    private static let nextID = Atomic<Int>(1)

    /// A number unique in this process, for logs (`redis.connection.id`).
    public let id: Int
    /// The configuration this connection was made with.
    public let configuration: RedisConfiguration
    /// 3 when the server accepted `HELLO 3`, else 2.
    public let protocolVersion: Int
    /// The server's version as HELLO reported it ("7.0.15"), or nil on RESP2 servers.
    public let serverVersion: String?

    let channel: Channel
    let logger: Logger
    let handler: NIOLoopBound<RedisChannelHandler>
    let closing: RedisClosingFlag

    private init(
        id: Int,
        channel: Channel,
        handler: NIOLoopBound<RedisChannelHandler>,
        closing: RedisClosingFlag,
        configuration: RedisConfiguration,
        protocolVersion: Int,
        serverVersion: String?,
        logger: Logger
    ) {
        self.id = id
        self.channel = channel
        self.handler = handler
        self.closing = closing
        self.configuration = configuration
        self.protocolVersion = protocolVersion
        self.serverVersion = serverVersion
        self.logger = logger
    }

    /// True until the connection closes, or starts to close, for any reason.
    public var isActive: Bool { channel.isActive && !closing.isSet }

    /// Completes when the connection has closed.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Opens, authenticates and prepares a connection; a `.sentinel` endpoint is first resolved to its master.
    ///
    /// - Parameter pushHandler: receives RESP3 push frames (and every frame once in subscriber mode), then a
    ///   failure when the connection ends. Only subscription connections set it.
    public static func connect(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger,
        pushHandler: (@Sendable (Result<RedisPush, RedisError>) -> Void)? = nil
    ) async throws(RedisError) -> RedisConnection {
        if case .sentinel(let sentinel) = configuration.endpoint {
            return try await RedisSentinelDiscovery.connect(
                configuration: configuration,
                sentinel: sentinel,
                eventLoopGroup: eventLoopGroup,
                logger: logger,
                pushHandler: pushHandler
            )
        }
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        var logger = logger
        logger[metadataKey: "redis.connection.id"] = "\(id)"

        let sslContext: NIOSSLContext?
        if let tls = configuration.tls {
            do {
                sslContext = try makeSSLContext(tls)
            } catch {
                if let error = error as? RedisError { throw error }
                throw RedisError(.tlsFailure, "cannot set up TLS: \(error)", underlyingError: error)
            }
        } else {
            sslContext = nil
        }
        let serverHostname = configuration.tls.flatMap { sniHostname($0, endpoint: configuration.endpoint) }

        let eventLoop = eventLoopGroup.next()
        let handlerLogger = logger
        let handlerBox = Mutex<NIOLoopBound<RedisChannelHandler>?>(nil)
        let closing = RedisClosingFlag()
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        let tlsHandler = try NIOSSLClientHandler(context: sslContext, serverHostname: serverHostname)
                        try channel.pipeline.syncOperations.addHandler(tlsHandler)
                    }
                    let handler = RedisChannelHandler(
                        eventLoop: channel.eventLoop,
                        logger: handlerLogger,
                        tls: sslContext != nil,
                        closing: closing
                    )
                    handler.pushHandler = pushHandler
                    try channel.pipeline.syncOperations.addHandler(handler)
                    // Kept here: under load TLS can fail and close the channel before a later lookup could run.
                    handlerBox.withLock { $0 = NIOLoopBound(handler, eventLoop: channel.eventLoop) }
                }
            }

        let channel: Channel
        do {
            switch configuration.endpoint {
            case .tcp(let host, let port):
                channel = try await bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .connect(host: host, port: port).get()
            case .unix(let path):
                channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
            case .sentinel:
                preconditionFailure("resolved through the sentinels above")
            }
        } catch {
            throw connectError(error, configuration: configuration)
        }

        guard let handler = handlerBox.withLock({ $0 }) else {
            channel.close(promise: nil)
            throw RedisError(.connectionClosed, "the connection closed while it was being set up")
        }

        do {
            let (version, serverVersion) = try await handshake(
                channel: channel,
                handler: handler,
                configuration: configuration
            )
            logger.debug(
                "connected to Redis",
                metadata: ["redis.url": "\(configuration.redactedURL)", "redis.protocol": "\(version)"]
            )
            return RedisConnection(
                id: id,
                channel: channel,
                handler: handler,
                closing: closing,
                configuration: configuration,
                protocolVersion: version,
                serverVersion: serverVersion,
                logger: logger
            )
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }

    /// HELLO 3 (+ AUTH, SETNAME), falling back to RESP2; then SELECT.
    private static func handshake(
        channel: Channel,
        handler: NIOLoopBound<RedisChannelHandler>,
        configuration: RedisConfiguration
    ) async throws(RedisError) -> (Int, String?) {
        let deadline = NIODeadline.now() + TimeAmount(configuration.connectTimeout)
        var hello = RESPCommand("HELLO", "3")
        if let password = configuration.password {
            hello.append("AUTH")
            hello.append(configuration.username ?? "default")
            hello.append(password)
        }
        if let name = configuration.clientName {
            hello.append("SETNAME")
            hello.append(name)
        }
        var version = 3
        var serverVersion: String?
        let reply = try await handshakeSend(
            hello,
            channel: channel,
            handler: handler,
            deadline: deadline,
            configuration: configuration
        )
        if let message = reply.errorMessage {
            if message.hasPrefix("NOPROTO") || message.contains("unknown command") {
                version = 2
                if let password = configuration.password {
                    var auth = RESPCommand("AUTH")
                    if let user = configuration.username { auth.append(user) }
                    auth.append(password)
                    let authReply = try await handshakeSend(
                        auth,
                        channel: channel,
                        handler: handler,
                        deadline: deadline,
                        configuration: configuration
                    )
                    if let error = authReply.errorMessage { throw authenticationError(error, configuration) }
                }
                if let name = configuration.clientName {
                    _ = try await handshakeSend(
                        RESPCommand("CLIENT", "SETNAME", name),
                        channel: channel,
                        handler: handler,
                        deadline: deadline,
                        configuration: configuration
                    )
                }
            } else {
                throw authenticationError(message, configuration)
            }
        } else if let pairs = reply.pairs {
            serverVersion = pairs.first(where: { $0.key.string == "version" })?.value.string
        } else {
            throw RedisError(
                .notARedisServer,
                "the server at \(configuration.redactedURL) did not answer HELLO as Redis does"
            )
        }
        if configuration.database != 0 {
            let selectReply = try await handshakeSend(
                RESPCommand("SELECT", configuration.database),
                channel: channel,
                handler: handler,
                deadline: deadline,
                configuration: configuration
            )
            if let message = selectReply.errorMessage {
                throw RedisError(.serverError, "SELECT \(configuration.database) failed: \(message)")
            }
        }
        return (version, serverVersion)
    }

    private static func handshakeSend(
        _ command: RESPCommand,
        channel: Channel,
        handler: NIOLoopBound<RedisChannelHandler>,
        deadline: NIODeadline,
        configuration: RedisConfiguration
    ) async throws(RedisError) -> RESPToken {
        do {
            return try await roundTrip(command, channel: channel, handler: handler, deadline: deadline)
        } catch {
            if error.code == .commandTimeout {
                throw RedisError(
                    .connectTimeout,
                    "no answer from \(configuration.redactedURL) within \(configuration.connectTimeout)"
                )
            }
            if error.code == .protocolError {
                throw RedisError(
                    .notARedisServer,
                    "the server at \(configuration.redactedURL) does not speak the Redis protocol",
                    underlyingError: error
                )
            }
            if let underlying = error.underlyingError, isTLSError(underlying) {
                throw RedisError(
                    .tlsFailure,
                    "TLS handshake with \(configuration.redactedURL) failed: \(underlying)",
                    underlyingError: underlying
                )
            }
            throw error
        }
    }

    private static func authenticationError(_ message: String, _ configuration: RedisConfiguration) -> RedisError {
        if message.hasPrefix("NOAUTH") {
            return RedisError(
                .authenticationFailed,
                "Redis at \(configuration.redactedURL) requires a password and none was given (set REDIS_PASSWORD or put it in the URL)"
            )
        }
        if message.hasPrefix("WRONGPASS") || message.contains("invalid password")
            || message.contains("invalid username")
        {
            return RedisError(
                .authenticationFailed,
                "Redis at \(configuration.redactedURL) refused the user name or password"
            )
        }
        if message.contains("without any password configured") {
            return RedisError(
                .authenticationFailed,
                "a password was given but Redis at \(configuration.redactedURL) has none configured"
            )
        }
        return RedisError(.serverError, "HELLO failed: \(message)")
    }

    static func connectError(_ error: any Error, configuration: RedisConfiguration) -> RedisError {
        let where_ = configuration.redactedURL
        if let e = error as? ChannelError, case .connectTimeout = e {
            return RedisError(.connectTimeout, "could not connect to \(where_) within \(configuration.connectTimeout)")
        }
        var errnos: [CInt] = []
        if let e = error as? NIOConnectionError {
            errnos = e.connectionErrors.compactMap { ($0.error as? IOError)?.errnoCode }
            if e.connectionErrors.contains(where: {
                ($0.error as? ChannelError).map { if case .connectTimeout = $0 { true } else { false } } ?? false
            }) {
                return RedisError(
                    .connectTimeout,
                    "could not connect to \(where_) within \(configuration.connectTimeout)"
                )
            }
            if e.connectionErrors.isEmpty, let dns = e.dnsAError ?? e.dnsAAAAError {
                return RedisError(
                    .connectionRefused,
                    "cannot resolve the host of \(where_): \(dns)",
                    underlyingError: ErrorBox(dns)
                )
            }
        }
        if let e = error as? IOError { errnos.append(e.errnoCode) }
        if errnos.contains(where: { $0 == ECONNREFUSED || $0 == ENOENT }) {
            return RedisError(.connectionRefused, "connection refused by \(where_): is redis-server running?")
        }
        return RedisError(.connectionRefused, "cannot connect to \(where_): \(error)", underlyingError: ErrorBox(error))
    }

    static func isTLSError(_ error: any Error) -> Bool {
        error is NIOSSLError || error is BoringSSLError
    }

    private static func makeSSLContext(_ tls: RedisConfiguration.TLS) throws -> NIOSSLContext {
        var config = TLSConfiguration.makeClientConfiguration()
        switch tls.verification {
        case .required, .optional:
            config.certificateVerification = tls.checkHostname ? .fullVerification : .noHostnameVerification
        case .none: config.certificateVerification = .none
        }
        if let ca = tls.caFile {
            config.trustRoots = .file(ca)
        }
        if let certFile = tls.certificateFile {
            // Name the file that could not be read (BoringSSL's error does not).
            do {
                config.certificateChain = try NIOSSLCertificate.fromPEMFile(certFile).map { .certificate($0) }
            } catch {
                throw RedisError(.tlsFailure, "cannot load the client certificate ssl_certfile=\(certFile): \(error)")
            }
            let keyFile = tls.keyFile ?? certFile
            do {
                config.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw RedisError(.tlsFailure, "cannot load the client key ssl_keyfile=\(keyFile): \(error)")
            }
        }
        return try NIOSSLContext(configuration: config)
    }

    /// The name to send as SNI and check the certificate against, or nil for an IP literal.
    ///
    /// TLS forbids an IP address in SNI (NIOSSL refuses it with `cannotUseIPAddressInSNI`), so a connection to
    /// an IP sends none. NIOSSL's verification then matches the certificate's IP subjectAltNames against the
    /// address the connection actually reached, and never a DNS name or the common name: a certificate that
    /// does not list that address is refused, as redis-py and OpenSSL refuse it.
    static func sniHostname(_ tls: RedisConfiguration.TLS, endpoint: RedisConfiguration.Endpoint) -> String? {
        let name: String
        if let serverName = tls.serverName {
            name = serverName
        } else if case .tcp(let host, _) = endpoint {
            name = host
        } else {
            return nil
        }
        return isIPAddress(name) ? nil : name
    }

    static func isIPAddress(_ host: String) -> Bool {
        // A bracketed IPv6 literal is an address too, whatever wrote the brackets.
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        return (try? SocketAddress(ipAddress: bare, port: 0)) != nil
    }

    // MARK: - Commands

    /// Sends one command and returns its reply; an error reply throws ``RedisError/Code/serverError``.
    public func send(_ command: RESPCommand) async throws(RedisError) -> RESPToken {
        let token = try await sendRaw(command, deadline: .now() + TimeAmount(configuration.commandTimeout))
        if let message = token.errorMessage { throw RedisError(.serverError, message) }
        return token
    }

    /// Sends a blocking command (BRPOP, BLMOVE, ...) whose server-side timeout is `blockingTimeout`; the reply is
    /// awaited for that long plus the command timeout. Cancelling the caller closes the connection.
    public func sendBlocking(_ command: RESPCommand, blockingTimeout: Duration) async throws(RedisError) -> RESPToken {
        let deadline = NIODeadline.now() + TimeAmount(blockingTimeout) + TimeAmount(configuration.commandTimeout)
        let channel = self.channel
        let token: RESPToken
        do {
            token = try await withTaskCancellationHandler {
                try await sendRaw(command, deadline: deadline)
            } onCancel: {
                channel.close(promise: nil)
            }
        } catch let error as RedisError {
            if Task.isCancelled { throw RedisError(.cancelled, "cancelled while waiting for \(command.name)") }
            throw error
        } catch {
            throw RedisError(.cancelled, "\(error)")
        }
        if let message = token.errorMessage { throw RedisError(.serverError, message) }
        return token
    }

    /// Sends the commands in one write and returns each reply (error replies as failures), in order.
    public func pipeline(_ commands: [RESPCommand]) async throws(RedisError) -> [Result<RESPToken, RedisError>] {
        guard !commands.isEmpty else { return [] }
        let deadline = NIODeadline.now() + TimeAmount(configuration.commandTimeout)
        let replies = RedisReplies(count: commands.count)
        RedisConnection.write(
            RedisRequest(commands: commands, replies: replies, deadline: deadline),
            to: channel,
            handler: handler
        )
        // One wait for the whole batch: waking this task for each reply costs a hop from the event loop per
        // command, which dominated pipelined throughput. A connection that fails fails the rest of the batch.
        return try await replies.wait().map { token in
            if let message = token.errorMessage { return .failure(RedisError(.serverError, message)) }
            return .success(token)
        }
    }

    /// Runs the commands in `MULTI`/`EXEC`, pipelined in one write. Returns each command's result, or nil when
    /// the transaction was aborted (a WATCHed key changed).
    public func transaction(_ commands: [RESPCommand]) async throws(RedisError) -> [Result<RESPToken, RedisError>]? {
        let replies = try await pipeline([RESPCommand("MULTI")] + commands + [RESPCommand("EXEC")])
        return try RedisConnection.execResults(replies)
    }

    static func execResults(
        _ replies: [Result<RESPToken, RedisError>]
    ) throws(RedisError) -> [Result<RESPToken, RedisError>]? {
        let exec = try replies.last!.get()
        if exec.isNull { return nil }
        guard let items = exec.array else {
            throw RedisError(.unexpectedReply, "EXEC answered \(exec)")
        }
        return items.map { item in
            if let message = item.errorMessage { return .failure(RedisError(.serverError, message)) }
            return .success(item)
        }
    }

    /// Writes without waiting for a reply (subscriber-mode commands, whose answers arrive as pushes).
    func sendWithoutReply(_ commands: [RESPCommand], enterSubscriberMode: Bool) async throws(RedisError) {
        let handler = self.handler
        let request = RedisRequest(commands: commands, replies: nil, deadline: .now())
        let future = channel.eventLoop.flatSubmit {
            if enterSubscriberMode { handler.value.subscriberMode = true }
            return self.channel.writeAndFlush(request)
        }
        do {
            try await future.get()
        } catch {
            throw RedisError(.connectionClosed, "could not write to Redis: \(error)", underlyingError: ErrorBox(error))
        }
    }

    func sendRaw(_ command: RESPCommand, deadline: NIODeadline) async throws(RedisError) -> RESPToken {
        try await RedisConnection.roundTrip(command, channel: channel, handler: handler, deadline: deadline)
    }

    /// Writes one command and waits for its reply (error replies are returned, not thrown).
    static func roundTrip(
        _ command: RESPCommand,
        channel: Channel,
        handler: NIOLoopBound<RedisChannelHandler>,
        deadline: NIODeadline
    ) async throws(RedisError) -> RESPToken {
        let replies = RedisReplies(count: 1)
        write(RedisRequest(commands: [command], replies: replies, deadline: deadline), to: channel, handler: handler)
        return try await replies.wait()[0]
    }

    /// Writes a request; if the write itself fails (the channel closed first), its replies fail too instead of
    /// waiting forever.
    static func write(_ request: RedisRequest, to channel: Channel, handler: NIOLoopBound<RedisChannelHandler>) {
        let replies = request.replies
        @Sendable func submit() {
            if let closed = handler.value.closedError {
                // Keep the first cause (a TLS failure, a timeout), not "channel closed".
                replies?.fail(closed)
                return
            }
            channel.writeAndFlush(request).whenFailure { error in
                let failure =
                    handler.value.closedError
                    ?? RedisError(
                        .connectionClosed,
                        "could not write to Redis: \(error)",
                        underlyingError: ErrorBox(error)
                    )
                replies?.fail(failure)
            }
        }
        if channel.eventLoop.inEventLoop {
            submit()
        } else {
            channel.eventLoop.execute { submit() }
        }
    }

    /// Closes the connection; commands in flight fail with ``RedisError/Code/connectionClosed``.
    public func close() async {
        try? await channel.close()
    }
}

/// Wraps a non-Sendable error so it can travel as an underlying error.
struct ErrorBox: Error, Sendable, CustomStringConvertible {
    let description: String
    init(_ error: any Error) { self.description = "\(error)" }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
