import Logging
import NIOCore
import NIOPosix
import RESP
import Synchronization

/// The Redis client the rest of the project uses: one shared, pipelined connection for ordinary commands (made
/// on first use and made again after it drops), dedicated connections for blocking pops and subscriptions, and
/// Lua scripts run by SHA with a reload when the server has forgotten them.
///
/// Reconnecting uses exponential backoff with full jitter: after `n` consecutive failed connects, the next attempt
/// waits a random time up to `min(maximumBackoff, initialBackoff × 2ⁿ)`. Calls made meanwhile wait for that
/// attempt and fail with its error, so a caller is never stuck longer than the connect timeout past the backoff.
public final class RedisClient: Sendable {
    /// The configuration connections are made with.
    public let configuration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let manager: ConnectionManager

    /// Creates a client; nothing connects until the first command.
    public init(
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        backoff: RedisBackoff = RedisBackoff(),
        logger: Logger
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.manager = ConnectionManager(
            configuration: configuration,
            eventLoopGroup: eventLoopGroup,
            backoff: backoff,
            logger: logger
        )
    }

    /// The event loop every connection of this client is on, when it was made with one (`eventLoopGroup: loop`).
    public var eventLoop: (any EventLoop)? { eventLoopGroup as? any EventLoop }

    /// The shared connection, connecting (or reconnecting) first if needed.
    public func connection() async throws(RedisError) -> RedisConnection {
        try await manager.connection()
    }

    /// Sends one command on the shared connection.
    @discardableResult
    public func send(_ command: RESPCommand) async throws(RedisError) -> RESPToken {
        try await connection().send(command)
    }

    /// Sends the commands in one write on the shared connection and returns each reply in order.
    public func pipeline(_ commands: [RESPCommand]) async throws(RedisError) -> [Result<RESPToken, RedisError>] {
        try await connection().pipeline(commands)
    }

    /// `MULTI` + commands + `EXEC`, pipelined. Commands queue atomically on the shared connection, since its
    /// writes are never interleaved within one request. (WATCH needs a dedicated connection.)
    public func transaction(_ commands: [RESPCommand]) async throws(RedisError) -> [Result<RESPToken, RedisError>] {
        guard let results = try await connection().transaction(commands) else {
            throw RedisError(.unexpectedReply, "EXEC aborted without a WATCH")
        }
        return results
    }

    /// Runs a Lua script by its SHA (`EVALSHA`), loading it first if this process has not yet, and loading it
    /// again, as EVAL with the source, if the server answers NOSCRIPT (after `SCRIPT FLUSH` or a restart).
    @discardableResult
    public func evaluate(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [String] = []
    ) async throws(RedisError)
        -> RESPToken
    {
        let connection = try await connection()
        return try await connection.evaluate(script, keys: keys, arguments: arguments)
    }

    /// Writes a script's `EVALSHA` on the shared connection and returns without waiting for the reply, so the
    /// caller can work while the command travels; ``RedisPendingReply/reply()`` waits for it.
    public func startEvaluate(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [String] = []
    ) async throws(RedisError) -> RedisPendingReply {
        let connection = try await connection()
        return try await connection.startEvaluate(script, keys: keys, arguments: arguments)
    }

    /// Opens a connection of its own (for blocking pops or long work) and closes it when `body` returns.
    public func withDedicatedConnection<R: Sendable>(
        _ body: (RedisConnection) async throws -> R
    ) async throws -> R {
        let connection = try await makeConnection()
        do {
            let result = try await body(connection)
            await connection.close()
            return result
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Opens a new connection that the caller owns and must close.
    public func makeConnection() async throws(RedisError) -> RedisConnection {
        try await RedisConnection.connect(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger)
    }

    /// How many times the shared connection was made again after it dropped (for metrics).
    public var reconnectCount: Int {
        get async { await manager.reconnects }
    }

    /// Closes the shared connection. Later commands connect again.
    public func close() async {
        await manager.close()
    }
}

extension RedisConnection {
    /// EVALSHA with load-on-first-use; on NOSCRIPT, the same call as EVAL with the source (no second race with a
    /// flush).
    public func evaluate(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [String] = []
    ) async throws(RedisError)
        -> RESPToken
    {
        try await startEvaluate(script, keys: keys, arguments: arguments).reply()
    }

    /// Writes `EVALSHA` now (after `SCRIPT LOAD` the first time this process uses the script) and returns; the
    /// reply is read with ``RedisPendingReply/reply()``.
    public func startEvaluate(
        _ script: RedisScript,
        keys: [String] = [],
        arguments: [String] = []
    ) async throws(RedisError) -> RedisPendingReply {
        var sha = script.loadedSHA
        if sha == nil {
            sha = try await load(script)
        }
        let replies = RedisReplies(count: 1)
        RedisConnection.write(
            RedisRequest(
                commands: [RESPCommand("EVALSHA", sha!, keys.count, keys, arguments)],
                replies: replies,
                deadline: .now() + TimeAmount(configuration.commandTimeout)
            ),
            to: channel,
            handler: handler
        )
        return RedisPendingReply(replies: replies) { () throws(RedisError) in
            // The server lost its scripts (SCRIPT FLUSH, a restart, a failover). EVAL with the source runs the script
            // whatever the cache holds at that instant, and caches it again under the same SHA for the next EVALSHA.
            try await self.send(RESPCommand("EVAL", script.source, keys.count, keys, arguments))
        }
    }

    private func load(_ script: RedisScript) async throws(RedisError) -> String {
        let reply = try await send(RESPCommand("SCRIPT", "LOAD", script.source))
        guard let sha = reply.string else {
            throw RedisError(.unexpectedReply, "SCRIPT LOAD answered \(reply)")
        }
        script.loadedSHA = sha
        return sha
    }
}

/// How long to wait between reconnection attempts.
public struct RedisBackoff: Sendable {
    /// The cap before jitter for the first retry.
    public var initial: Duration
    /// The largest wait between attempts.
    public var maximum: Duration

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The wait before attempt `failures + 1`: uniformly random in `0...min(maximum, initial × 2^failures)`.
    public func delay(afterFailures failures: Int) -> Duration {
        guard failures > 0 else { return .zero }
        let capNanos = min(
            Double(maximum.components.seconds) * 1e9 + Double(maximum.components.attoseconds) / 1e9,
            (Double(initial.components.seconds) * 1e9 + Double(initial.components.attoseconds) / 1e9)
                * pow2(min(failures - 1, 30))
        )
        return .nanoseconds(Int64(Double.random(in: 0...max(capNanos, 0))))
    }

    private func pow2(_ n: Int) -> Double { Double(1 << n) }

    /// Runs `operation` until it succeeds, sleeping this backoff after each failure. Gives up, rethrowing the
    /// last error, after `maximumAttempts` failures (nil: no limit) or once `shouldStop` (given the failures so far)
    /// says so. `onFailure` sees each error, the failures so far and the coming delay (for logging).
    @discardableResult
    public func retry<R>(
        maximumAttempts: Int? = nil,
        shouldStop: (Int) -> Bool = { _ in false },
        onFailure: (RedisError, Int, Duration) -> Void,
        operation: () async throws(RedisError) -> R
    ) async throws(RedisError) -> R {
        var failures = 0
        while true {
            do {
                return try await operation()
            } catch {
                failures += 1
                if let maximumAttempts, failures >= maximumAttempts { throw error }
                if shouldStop(failures) { throw error }
                let delay = delay(afterFailures: failures)
                onFailure(error, failures, delay)
                try? await Task.sleep(for: delay)
            }
        }
    }
}

/// Keeps the shared connection: at most one connect in progress, others wait for it.
private actor ConnectionManager {
    private enum State {
        case idle
        case connecting([CheckedContinuation<RedisConnection, any Error>])
        case connected(RedisConnection)
        case closed
    }

    let configuration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    let backoff: RedisBackoff
    let logger: Logger
    private var state = State.idle
    private var consecutiveFailures = 0
    private var hasConnected = false
    private(set) var reconnects = 0
    /// The connection of `.connected`, readable without entering the actor: while it is up, commands take it
    /// from here without a hop to the actor and back (two task switches per command).
    private nonisolated let current = Mutex<RedisConnection?>(nil)

    init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, backoff: RedisBackoff, logger: Logger) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.backoff = backoff
        self.logger = logger
    }

    nonisolated func connection() async throws(RedisError) -> RedisConnection {
        if let connection = current.withLock({ $0 }), connection.isActive { return connection }
        return try await connect()
    }

    /// The shared connection, connecting first unless one is up (at most one connect at a time).
    private func connect() async throws(RedisError) -> RedisConnection {
        switch state {
        case .connected(let connection) where connection.isActive:
            return connection
        case .connecting(var waiters):
            do {
                return try await withCheckedThrowingContinuation { continuation in
                    waiters.append(continuation)
                    state = .connecting(waiters)
                }
            } catch let error as RedisError {
                throw error
            } catch {
                throw RedisError(.cancelled, "\(error)")
            }
        case .closed:
            // A closed client reopens on demand: close() only drops the current connection.
            state = .idle
            return try await connect()
        case .idle, .connected:
            state = .connecting([])
            let delay = backoff.delay(afterFailures: consecutiveFailures)
            if delay > .zero {
                try? await Task.sleep(for: delay)
            }
            let result: Result<RedisConnection, RedisError>
            do {
                result = .success(
                    try await RedisConnection.connect(
                        configuration: configuration,
                        eventLoopGroup: eventLoopGroup,
                        logger: logger
                    )
                )
            } catch {
                result = .failure(error)
            }
            guard case .connecting(let waiters) = state else {
                preconditionFailure("only this call leaves the connecting state")
            }
            switch result {
            case .success(let connection):
                if consecutiveFailures > 0 {
                    logger.info("reconnected to Redis", metadata: ["redis.url": "\(configuration.redactedURL)"])
                }
                consecutiveFailures = 0
                if hasConnected { reconnects += 1 }
                hasConnected = true
                state = .connected(connection)
                current.withLock { $0 = connection }
                for waiter in waiters { waiter.resume(returning: connection) }
                return connection
            case .failure(let error):
                consecutiveFailures += 1
                state = .idle
                for waiter in waiters { waiter.resume(throwing: error) }
                throw error
            }
        }
    }

    func close() async {
        hasConnected = false
        if case .connected(let connection) = state {
            state = .closed
            current.withLock { $0 = nil }
            await connection.close()
        }
    }
}

/// The reply of a command already written (``RedisClient/startEvaluate(_:keys:arguments:)``).
public struct RedisPendingReply: Sendable {
    private let replies: RedisReplies
    /// What answers instead when the server replies NOSCRIPT.
    private let noScript: @Sendable () async throws(RedisError) -> RESPToken

    init(
        replies: RedisReplies,
        noScript: @escaping @Sendable () async throws(RedisError) -> RESPToken
    ) {
        self.replies = replies
        self.noScript = noScript
    }

    /// Waits for the reply; an error reply throws ``RedisError/Code/serverError``.
    public func reply() async throws(RedisError) -> RESPToken {
        let token = try await replies.wait()[0]
        guard let message = token.errorMessage else { return token }
        let error = RedisError(.serverError, message)
        if error.serverErrorPrefix == "NOSCRIPT" { return try await noScript() }
        throw error
    }
}
