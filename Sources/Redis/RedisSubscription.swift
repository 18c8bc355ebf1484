import Logging
import NIOCore
import RESP
import Synchronization

/// A message that arrived on a subscribed channel or pattern.
public struct RedisMessage: Sendable, Hashable {
    /// The channel it was published on.
    public var channel: String
    /// The pattern that matched, for `PSUBSCRIBE` subscriptions.
    public var pattern: String?
    /// The published bytes.
    public var payload: ByteBuffer
}

/// A subscription on a connection of its own. Iterate ``messages``; the sequence ends with an error when the
/// connection closes. Use it through ``RedisClient/withSubscription(channels:patterns:_:)``, which closes it.
public final class RedisSubscription: Sendable {
    /// Messages in the order Redis sent them.
    public let messages: AsyncThrowingStream<RedisMessage, any Error>
    let connection: RedisConnection
    private let confirmations: Confirmations

    final class Confirmations: Sendable {
        private struct State {
            var received = 0
            var failure: RedisError?
            var waiters: [(target: Int, continuation: CheckedContinuation<Void, any Error>)] = []
        }
        private let state = Mutex(State())
        private let expected = Atomic<Int>(0)

        func expect(_ n: Int) -> Int { expected.add(n, ordering: .relaxed).newValue }

        func confirm() {
            let ready = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
                state.received += 1
                let received = state.received
                let ready = state.waiters.filter { $0.target <= received }.map(\.continuation)
                state.waiters.removeAll { $0.target <= received }
                return ready
            }
            for continuation in ready { continuation.resume() }
        }

        func fail(_ error: RedisError) {
            let waiting = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
                state.failure = error
                defer { state.waiters.removeAll() }
                return state.waiters.map(\.continuation)
            }
            for continuation in waiting { continuation.resume(throwing: error) }
        }

        func wait(for target: Int) async throws {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resume: Result<Void, RedisError>? = state.withLock { state in
                    if let failure = state.failure { return .failure(failure) }
                    if state.received >= target { return .success(()) }
                    state.waiters.append((target, continuation))
                    return nil
                }
                if let resume { continuation.resume(with: resume) }
            }
        }
    }

    private init(
        connection: RedisConnection,
        messages: AsyncThrowingStream<RedisMessage, any Error>,
        confirmations: Confirmations
    ) {
        self.connection = connection
        self.messages = messages
        self.confirmations = confirmations
    }

    static func open(client: RedisClient) async throws(RedisError) -> RedisSubscription {
        let (stream, continuation) = AsyncThrowingStream<RedisMessage, any Error>.makeStream()
        let confirmations = Confirmations()
        let connection = try await RedisConnection.connect(
            configuration: client.configuration,
            eventLoopGroup: client.eventLoopGroup,
            logger: client.logger,
            pushHandler: { result in
                switch result {
                case .failure(let error):
                    confirmations.fail(error)
                    continuation.finish(
                        throwing: RedisError(
                            .subscriptionClosed,
                            "the subscription ended: \(error.message)",
                            underlyingError: error
                        )
                    )
                case .success(let push):
                    guard let items = push.token.array, let kind = items.first?.string?.lowercased() else { return }
                    switch kind {
                    case "message" where items.count >= 3:
                        continuation.yield(
                            RedisMessage(
                                channel: items[1].string ?? "",
                                pattern: nil,
                                payload: items[2].bytes ?? ByteBuffer()
                            )
                        )
                    case "pmessage" where items.count >= 4:
                        continuation.yield(
                            RedisMessage(
                                channel: items[2].string ?? "",
                                pattern: items[1].string,
                                payload: items[3].bytes ?? ByteBuffer()
                            )
                        )
                    case "subscribe", "psubscribe", "unsubscribe", "punsubscribe":
                        confirmations.confirm()
                    default:
                        break
                    }
                }
            }
        )
        return RedisSubscription(connection: connection, messages: stream, confirmations: confirmations)
    }

    /// Subscribes to more channels; returns once Redis has confirmed each.
    public func subscribe(channels: [String]) async throws(RedisError) {
        try await run("SUBSCRIBE", channels)
    }

    /// Subscribes to more patterns (`PSUBSCRIBE`); returns once Redis has confirmed each.
    public func subscribe(patterns: [String]) async throws(RedisError) {
        try await run("PSUBSCRIBE", patterns)
    }

    /// Leaves channels; returns once Redis has confirmed each.
    public func unsubscribe(channels: [String]) async throws(RedisError) {
        try await run("UNSUBSCRIBE", channels)
    }

    /// Leaves patterns; returns once Redis has confirmed each.
    public func unsubscribe(patterns: [String]) async throws(RedisError) {
        try await run("PUNSUBSCRIBE", patterns)
    }

    private func run(_ verb: String, _ names: [String]) async throws(RedisError) {
        guard !names.isEmpty else { return }
        let target = confirmations.expect(names.count)
        try await connection.sendWithoutReply([RESPCommand(verb, names)], enterSubscriberMode: true)
        do {
            try await confirmations.wait(for: target)
        } catch let error as RedisError {
            throw error
        } catch {
            throw RedisError(.subscriptionClosed, "\(error)")
        }
    }

    /// Closes the subscription's connection; ``messages`` ends.
    public func close() async {
        await connection.close()
    }
}

extension RedisClient {
    /// Opens a subscription connection, subscribes, runs `body`, and closes it whatever happens.
    public func withSubscription<R: Sendable>(
        channels: [String] = [],
        patterns: [String] = [],
        _ body: (RedisSubscription) async throws -> R
    ) async throws -> R {
        let subscription = try await RedisSubscription.open(client: self)
        do {
            try await subscription.subscribe(channels: channels)
            try await subscription.subscribe(patterns: patterns)
            let result = try await body(subscription)
            await subscription.close()
            return result
        } catch {
            await subscription.close()
            throw error
        }
    }
}
