import CeleryProtocol
import Logging
import RESP
import Redis
import Synchronization

/// Wakes an idle fetch loop the moment a message arrives, without taking the message out of Redis.
///
/// Each watched list has a dedicated connection blocked in `BLMOVE list list RIGHT RIGHT`: Redis answers it when
/// the list has an element, and "moves" the last element onto the same end of the same list, which leaves the
/// list as it was. The fetch loop then takes the message with the atomic pop-and-record script, so no message is
/// ever out of Redis unrecorded, and a `kill -9` at any instant loses nothing (where kombu's BRPOP loses the
/// message popped but not yet recorded). A Python worker blocked in BRPOP on the same list is still served: the
/// list stays non-empty after the BLMOVE.
///
/// The watchers block only while the fetch loop is idle (armed), so a non-empty list cannot make them spin.
/// BLMOVE needs Redis 6.2; when the server refuses it (an older server, or an ACL without `+blmove`),
/// ``isUnavailable`` turns true and the worker polls instead.
package final class IdleWake: Sendable {
    private struct State {
        var armed = false
        var closed = false
        var unavailable = false
        /// Watchers waiting to be armed.
        var armWaiters: [CheckedContinuation<Bool, Never>] = []
        /// The lists the fetch loop last asked to watch (as it gave them, and as a set), and those that have a
        /// watcher.
        var wantedLists: [String] = []
        var wanted: Set<String> = []
        var watched: Set<String> = []
        /// The coordinator, waiting for lists without a watcher.
        var coordinator: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())
    /// The message the last watcher saw (BLMOVE answers with it), for the fetch loop to decode while its pop
    /// travels; the pop most often takes that very message.
    private let seen = Mutex<[UInt8]?>(nil)
    /// Larger messages are not kept for decoding ahead.
    package static let largestSeen = 64 * 1024
    /// What the fetch loop waits on.
    private let bell = TimerSignal()
    package let client: RedisClient
    /// How long one BLMOVE blocks before its watcher checks whether it is still wanted.
    package let blockTimeout: Duration
    package let logger: Logger

    package init(client: RedisClient, blockTimeout: Duration, logger: Logger) {
        self.client = client
        self.blockTimeout = blockTimeout
        self.logger = logger
    }

    /// True once Redis refused BLMOVE: the fetch loop polls instead.
    package var isUnavailable: Bool { state.withLock { $0.unavailable } }

    /// Arms the watchers of `lists` and returns on the first sign of a message, or after `timeout`, or at close.
    package func wait(lists: [String], timeout: Duration) async {
        // A ring from before the empty pop that led here is stale: the pop came after it.
        bell.discardPending()
        let (closed, armWaiters, coordinator) = state.withLock {
            state -> (Bool, [CheckedContinuation<Bool, Never>], CheckedContinuation<Void, Never>?) in
            if state.closed || state.unavailable { return (true, [], nil) }
            state.armed = true
            let waiters = state.armWaiters
            state.armWaiters = []
            // Most waits name the very array the last one did (ConsumedQueues keeps it): then the sets are as
            // they were, and a waiting coordinator found every wanted list watched already (a watcher leaves
            // `watched` only for a list no longer wanted).
            guard lists != state.wantedLists else { return (false, waiters, nil) }
            state.wantedLists = lists
            state.wanted = Set(lists)
            var coordinator: CheckedContinuation<Void, Never>?
            if !state.wanted.isSubset(of: state.watched) {
                coordinator = state.coordinator
                state.coordinator = nil
            }
            return (false, waiters, coordinator)
        }
        if closed { return }
        for waiter in armWaiters { waiter.resume(returning: true) }
        coordinator?.resume()
        await bell.wait(for: timeout)
        state.withLock { $0.armed = false }
    }

    /// The message a watcher last saw, once (nil if none since the last call).
    package func takeSeen() -> [UInt8]? {
        seen.withLock { seen in
            defer { seen = nil }
            return seen
        }
    }

    /// Wakes the fetch loop (a watcher saw a message, Redis refused BLMOVE, or the worker is stopping).
    package func ring() {
        state.withLock { $0.armed = false }
        bell.signal()
    }

    /// Stops the watchers and wakes the fetch loop.
    package func close() {
        let (armWaiters, coordinator) = state.withLock {
            state -> ([CheckedContinuation<Bool, Never>], CheckedContinuation<Void, Never>?) in
            state.closed = true
            defer {
                state.armWaiters = []
                state.coordinator = nil
            }
            return (state.armWaiters, state.coordinator)
        }
        for waiter in armWaiters { waiter.resume(returning: false) }
        coordinator?.resume()
        ring()
    }

    /// Runs one watcher per list asked for, until closed.
    package func run() async {
        await withDiscardingTaskGroup { group in
            while true {
                let (closed, newLists) = state.withLock { state -> (Bool, [String]) in
                    if state.closed { return (true, []) }
                    let new = state.wanted.subtracting(state.watched)
                    state.watched.formUnion(new)
                    return (false, Array(new))
                }
                if closed { break }
                for list in newLists {
                    group.addTask { await self.watch(list) }
                }
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if state.closed || !state.wanted.isSubset(of: state.watched) { return true }
                        state.coordinator = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
            // A watcher may be blocked in BLMOVE for up to `blockTimeout`: cancelling closes its connection.
            group.cancelAll()
        }
    }

    /// Waits until armed; false once closed.
    private func armed() async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let now = state.withLock { state -> Bool? in
                if state.closed { return false }
                if state.armed { return true }
                state.armWaiters.append(continuation)
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// Blocks in BLMOVE on `list` whenever armed, ringing when it answers with an element.
    private func watch(_ list: String) async {
        var connection: RedisConnection?
        var failures = 0
        let seconds = String(
            Double(blockTimeout.components.seconds) + Double(blockTimeout.components.attoseconds) / 1e18
        )
        while await armed(), !Task.isCancelled {
            // `cancel_consumer`: a list no longer consumed loses its watcher (in the same step as the check, so a
            // wait that wants it again starts a new one).
            let wanted = state.withLock { state -> Bool in
                if state.wanted.contains(list) { return true }
                state.watched.remove(list)
                return false
            }
            guard wanted else { break }
            do {
                if connection == nil || connection?.isActive == false {
                    connection = try await client.makeConnection()
                }
                let reply = try await connection!.sendBlocking(
                    RESPCommand("BLMOVE", list, list, "RIGHT", "RIGHT", seconds),
                    blockingTimeout: blockTimeout
                )
                failures = 0
                if !reply.isNull {
                    if let bytes = reply.bytes, bytes.readableBytes <= Self.largestSeen {
                        let copy = Array(bytes.readableBytesView)
                        seen.withLock { $0 = copy }
                    }
                    ring()
                }
            } catch {
                if Task.isCancelled { break }
                if let refusal = Self.refusal(error) {
                    logger.warning(
                        "Redis refuses BLMOVE (it needs Redis 6.2, and +blmove in an ACL): an idle worker polls instead",
                        metadata: ["error": "\(refusal)"]
                    )
                    state.withLock { $0.unavailable = true }
                    ring()
                    break
                }
                await connection?.close()
                connection = nil
                failures += 1
                // The fetch loop reports an unreachable Redis itself; a watcher says once that it keeps failing
                // while Redis otherwise answers (for example maxclients reached).
                if failures == 5 {
                    logger.warning(
                        "the idle wake-up keeps failing: an idle worker looks for messages once a second until it works",
                        metadata: ["error": "\(error)", "redis.list": "\(list)"]
                    )
                }
                let delay = RedisBackoff(initial: .milliseconds(100), maximum: .seconds(5)).delay(
                    afterFailures: failures
                )
                logger.debug("idle wake-up failed, retrying", metadata: ["error": "\(error)", "retry.in": "\(delay)"])
                try? await Task.sleep(for: delay)
            }
        }
        await connection?.close()
    }

    /// The server's refusal of the command itself (unknown command, or denied by an ACL), if that is the error.
    package static func refusal(_ error: RedisError) -> String? {
        guard error.code == .serverError else { return nil }
        let prefix = error.serverErrorPrefix ?? ""
        if prefix == "NOPERM" { return error.message }
        if prefix == "ERR", error.message.lowercased().contains("unknown command") { return error.message }
        return nil
    }
}
