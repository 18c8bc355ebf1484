import Logging
import NIOCore
import RESP
import Synchronization

/// Connecting to the master that Redis Sentinel names, and following it when it changes.
///
/// Every connection to a `.sentinel` endpoint asks the sentinels in turn (`SENTINEL get-master-addr-by-name`),
/// connects to the address the first one that knows the master gives, and checks with `ROLE` that the server is
/// a master: a sentinel can name a master before it has been promoted, or after it was demoted. Until the
/// connect timeout, a failed round (no sentinel answers, the master refuses, a replica answers) is tried again
/// every ``pollInterval``, so a connection attempt made while a failover is under way succeeds as soon as the new
/// master is elected, without the backoff between attempts growing meanwhile.
///
/// Connections made this way are watched: one connection per set of sentinels subscribes to `+switch-master`
/// and closes every connection to the old master when the master changes, so each is made again, through the
/// sentinels, to the new one. A demoted master's `READONLY` reply closes the connection too
/// (``RedisChannelHandler``), and so does a lost connection: all three lead back here.
enum RedisSentinelDiscovery {
    /// How long a connection attempt waits between rounds of asking the sentinels.
    static let pollInterval = Duration.milliseconds(200)
    /// The most time one sentinel is given to connect and answer; the next is asked after that.
    static let sentinelTimeout = Duration.seconds(2)
    /// Failures that asking again cannot mend: a wrong password, certificate or master name.
    static let permanentFailures: Set<RedisError.Code> = [.authenticationFailed, .tlsFailure, .invalidURL]

    static func connect(
        configuration: RedisConfiguration,
        sentinel: RedisConfiguration.Sentinel,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        pushHandler: (@Sendable (Result<RedisPush, RedisError>) -> Void)?
    ) async throws(RedisError) -> RedisConnection {
        guard let masterName = sentinel.masterName, !masterName.isEmpty else {
            throw RedisError(
                .invalidURL,
                "no Sentinel master name for \(configuration.redactedURL): add ?master_name=NAME to the URL or set CELERY_BROKER_MASTER_NAME"
            )
        }
        guard !sentinel.sentinels.isEmpty else {
            throw RedisError(.invalidURL, "no sentinel to ask in \(configuration.redactedURL)")
        }
        let watch = RedisSentinelWatch.of(sentinel)
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.connectTimeout
        var lastError: RedisError
        while true {
            do throws(RedisError) {
                let address = try await askSentinels(
                    configuration: configuration,
                    sentinel: sentinel,
                    masterName: masterName,
                    watch: watch,
                    eventLoopGroup: eventLoopGroup,
                    logger: logger
                )
                var direct = configuration
                direct.endpoint = .tcp(host: address.host, port: address.port)
                let connection = try await RedisConnection.connect(
                    configuration: direct,
                    eventLoopGroup: eventLoopGroup,
                    logger: logger,
                    pushHandler: pushHandler
                )
                if let role = try await role(of: connection), role != "master" {
                    await connection.close()
                    throw RedisError(
                        .connectionRefused,
                        "the sentinels name \(address.host):\(address.port) as master '\(masterName)', but it answers ROLE with '\(role)' (a failover is under way)"
                    )
                }
                watch.register(connection, address: address)
                await watch.follow(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger)
                return connection
            } catch {
                lastError = error
                if Self.permanentFailures.contains(error.code) { throw error }
            }
            if Task.isCancelled || clock.now + pollInterval >= deadline { throw lastError }
            logger.debug("no Redis master through Sentinel yet", metadata: ["error": "\(lastError)"])
            try? await Task.sleep(for: pollInterval)
        }
    }

    /// The master's address from the first sentinel that knows it, starting with the one that answered last.
    static func askSentinels(
        configuration: RedisConfiguration,
        sentinel: RedisConfiguration.Sentinel,
        masterName: String,
        watch: RedisSentinelWatch,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) async throws(RedisError) -> RedisConfiguration.Sentinel.Address {
        var failures: [String] = []
        var unknownTo = 0
        let first = watch.preferredSentinel
        for offset in sentinel.sentinels.indices {
            let index = (first + offset) % sentinel.sentinels.count
            let address = sentinel.sentinels[index]
            do throws(RedisError) {
                let connection = try await RedisConnection.connect(
                    configuration: sentinelConfiguration(configuration, sentinel: sentinel, address: address),
                    eventLoopGroup: eventLoopGroup,
                    logger: logger
                )
                let reply: RESPToken
                do throws(RedisError) {
                    reply = try await connection.send(RESPCommand("SENTINEL", "get-master-addr-by-name", masterName))
                } catch {
                    await connection.close()
                    throw error
                }
                await connection.close()
                if reply.isNull {
                    unknownTo += 1
                    failures.append("\(address.host):\(address.port) knows no master '\(masterName)'")
                    continue
                }
                guard let items = reply.array, items.count == 2, let host = items[0].string,
                    let port = items[1].string.flatMap(Int.init) ?? items[1].int
                else {
                    throw RedisError(.unexpectedReply, "SENTINEL get-master-addr-by-name answered \(reply)")
                }
                watch.preferredSentinel = index
                return .init(host: host, port: port)
            } catch {
                if error.code == .authenticationFailed || error.code == .tlsFailure {
                    throw RedisError(error.code, "sentinel \(address.host):\(address.port): \(error.message)")
                }
                failures.append("\(address.host):\(address.port): \(error.message)")
            }
        }
        if unknownTo == sentinel.sentinels.count {
            throw RedisError(
                .invalidURL,
                "no sentinel knows a master named '\(masterName)' (check master_name)"
            )
        }
        throw RedisError(
            .connectionRefused,
            "no sentinel named the master '\(masterName)': \(failures.joined(separator: "; "))"
        )
    }

    /// How to reach one sentinel: its own credentials, the master's TLS settings, a short timeout.
    static func sentinelConfiguration(
        _ configuration: RedisConfiguration,
        sentinel: RedisConfiguration.Sentinel,
        address: RedisConfiguration.Sentinel.Address
    ) -> RedisConfiguration {
        var result = RedisConfiguration(
            endpoint: .tcp(host: address.host, port: address.port),
            username: sentinel.username,
            password: sentinel.password,
            database: 0,
            tls: configuration.tls
        )
        result.connectTimeout = min(configuration.connectTimeout, sentinelTimeout)
        result.commandTimeout = min(configuration.commandTimeout, sentinelTimeout)
        return result
    }

    /// The first element of `ROLE` (`master`, `slave`, `sentinel`), or nil when the user may not run ROLE.
    static func role(of connection: RedisConnection) async throws(RedisError) -> String? {
        do throws(RedisError) {
            let reply = try await connection.send(RESPCommand("ROLE"))
            guard let role = reply.array?.first?.string else {
                throw RedisError(.unexpectedReply, "ROLE answered \(reply)")
            }
            return role
        } catch {
            // An ACL without +role: the sentinels' word has to do.
            if error.serverErrorPrefix == "NOPERM" { return nil }
            await connection.close()
            throw error
        }
    }
}

/// The connections made to one Sentinel master in this process, and the sentinel subscription that follows it.
///
/// Shared by every client with the same Sentinel settings (the broker, the result backend and task code often
/// name the same master): one `+switch-master` subscription serves them all.
final class RedisSentinelWatch: Sendable {
    private static let all = Mutex<[RedisConfiguration.Sentinel: RedisSentinelWatch]>([:])

    static func of(_ sentinel: RedisConfiguration.Sentinel) -> RedisSentinelWatch {
        all.withLock { watches in
            if let watch = watches[sentinel] { return watch }
            let watch = RedisSentinelWatch(sentinel: sentinel)
            watches[sentinel] = watch
            return watch
        }
    }

    private struct State {
        /// Connections to the master, by connection id, with the address they reached.
        var connections: [Int: (connection: RedisConnection, address: RedisConfiguration.Sentinel.Address)] = [:]
        /// A sentinel connection subscribed to `+switch-master`, once made and while it lasts.
        var subscription: RedisConnection?
        var subscribing = false
        /// When subscribing last failed: not tried again for ``RedisSentinelWatch/followRetryInterval``, so that
        /// sentinels that refuse SUBSCRIBE do not cost every new connection a round of attempts.
        var lastFailure: ContinuousClock.Instant?
        /// Failed subscriptions in a row: each next attempt goes to the next sentinel.
        var followFailures = 0
        var preferredSentinel = 0
    }

    static let followRetryInterval = Duration.seconds(5)

    let sentinel: RedisConfiguration.Sentinel
    private let state = Mutex(State())

    private init(sentinel: RedisConfiguration.Sentinel) {
        self.sentinel = sentinel
    }

    /// The sentinel that answered last; asked first next time (as redis-py does).
    var preferredSentinel: Int {
        get { state.withLock { $0.preferredSentinel } }
        set { state.withLock { $0.preferredSentinel = newValue } }
    }

    func register(_ connection: RedisConnection, address: RedisConfiguration.Sentinel.Address) {
        let id = connection.id
        state.withLock { $0.connections[id] = (connection, address) }
        connection.closeFuture.whenComplete { [weak self] _ in
            _ = self?.state.withLock { $0.connections.removeValue(forKey: id) }
        }
    }

    /// Closes the connections that are not to `master`; their users connect again through the sentinels.
    func switchMaster(to master: RedisConfiguration.Sentinel.Address, logger: Logger) {
        let stale = state.withLock { state in
            let stale = state.connections.values.filter { $0.address != master }.map(\.connection)
            for connection in stale { state.connections.removeValue(forKey: connection.id) }
            return stale
        }
        logger.info(
            "Sentinel switched the Redis master",
            metadata: [
                "redis.sentinel.master": "\(sentinel.masterName ?? "")",
                "redis.sentinel.address": "\(master.host):\(master.port)",
                "redis.sentinel.closed": "\(stale.count)",
            ]
        )
        for connection in stale {
            connection.channel.close(promise: nil)
        }
    }

    /// Makes sure one sentinel connection is subscribed to `+switch-master`; best effort, as a lost connection
    /// and `READONLY` lead to the new master too. Called after each connection to the master is made.
    func follow(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup, logger: Logger) async {
        let now = ContinuousClock.now
        guard !sentinel.sentinels.isEmpty else { return }
        let start = state.withLock { state -> Bool in
            if state.subscribing || state.subscription?.isActive == true { return false }
            if let lastFailure = state.lastFailure, now < lastFailure + Self.followRetryInterval { return false }
            state.subscribing = true
            return true
        }
        guard start, let masterName = sentinel.masterName else { return }
        var subscription: RedisConnection?
        // Only the sentinel that has just answered: the connection to the master waits for this, so it must not
        // wait for unreachable sentinels too. Another is tried after the retry interval if this one fails.
        let index = state.withLock { ($0.preferredSentinel + $0.followFailures) % sentinel.sentinels.count }
        let address = sentinel.sentinels[index]
        do {
            let connection = try await RedisConnection.connect(
                configuration: RedisSentinelDiscovery.sentinelConfiguration(
                    configuration,
                    sentinel: sentinel,
                    address: address
                ),
                eventLoopGroup: eventLoopGroup,
                logger: logger,
                pushHandler: { [weak self] result in
                    guard let self else { return }
                    switch result {
                    case .success(let push):
                        guard let master = Self.switchedMaster(push, masterName: masterName) else { return }
                        self.switchMaster(to: master, logger: logger)
                    case .failure:
                        // The next connection to the master subscribes again (`follow` sees this one closed).
                        break
                    }
                }
            )
            try await connection.sendWithoutReply(
                [RESPCommand("SUBSCRIBE", "+switch-master")],
                enterSubscriberMode: true
            )
            subscription = connection
            logger.debug(
                "following Sentinel's +switch-master",
                metadata: ["redis.sentinel.address": "\(address.host):\(address.port)"]
            )
        } catch {
            logger.debug(
                "cannot subscribe to +switch-master",
                metadata: ["redis.sentinel.address": "\(address.host):\(address.port)", "error": "\(error)"]
            )
        }
        state.withLock { state in
            state.subscribing = false
            if let subscription, subscription.isActive {
                state.subscription = subscription
                state.lastFailure = nil
                state.followFailures = 0
            } else {
                state.lastFailure = ContinuousClock.now
                state.followFailures += 1
            }
        }
    }

    /// The new master's address in a `+switch-master` message for `masterName`:
    /// `<name> <old-ip> <old-port> <new-ip> <new-port>`.
    static func switchedMaster(_ push: RedisPush, masterName: String) -> RedisConfiguration.Sentinel.Address? {
        guard let items = push.token.array, items.count >= 3, items[0].string?.lowercased() == "message",
            items[1].string == "+switch-master", let payload = items[2].string
        else { return nil }
        let fields = payload.split(separator: " ")
        guard fields.count == 5, fields[0] == masterName, let port = Int(fields[4]) else { return nil }
        return .init(host: String(fields[3]), port: port)
    }
}
