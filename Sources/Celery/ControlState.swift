import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import Redis
import Synchronization

/// The state remote control reads and changes while the worker runs: running tasks, the revoked set, rate and
/// time limits set by `control`, the consumed queues, the Lamport clock, and the hooks to the event dispatcher.
package final class WorkerControlState: Sendable {
    package let revoked: RevokedTasks
    /// Stamps revoked by `revoke_by_stamped_headers` (RevokedStamps.swift).
    package let revokedStamps = RevokedStamps()
    package let localRates = LocalRateLimits()
    /// Global limits from handler options (`TaskOptions.globalRateLimit`), fixed for the worker's life.
    package let globalRates: [String: TaskRateLimit]
    package let globalLimiter: GlobalRateLimiter
    package let active = ActiveRequests()
    package let queues: ConsumedQueues
    package let startTime = CeleryTimestamp.now()
    /// Signalled once the pidbox subscription is confirmed (or remote control is off).
    package let listening = OneTimeSignal()
    private let timeLimits = Mutex<[String: TimeLimitOverride]>([:])
    private let hookStore = Mutex(ControlHooks())
    private let clock = Mutex(0)

    package struct TimeLimitOverride: Sendable {
        package var soft: Double?
        package var hard: Double?
    }

    package init(configuration: WorkerConfiguration, registry: TaskRegistry, broker: RedisClient, logger: Logger) {
        revoked = RevokedTasks(client: broker, key: configuration.revokedKey)
        globalLimiter = GlobalRateLimiter(client: broker, keyPrefix: configuration.globalRateLimitKeyPrefix)
        queues = ConsumedQueues(configuration.queues)
        var global: [String: TaskRateLimit] = [:]
        for name in registry.names {
            guard let task = registry[name] else { continue }
            if let text = task.options.rateLimit {
                do {
                    localRates.set(try TaskRateLimit(text), for: name)
                } catch {
                    logger.error(
                        "invalid rate limit; the task runs without one",
                        metadata: ["celery.task.name": "\(name)", "rate_limit": "\(text)", "error": "\(error)"]
                    )
                }
            }
            if let text = task.options.globalRateLimit {
                do {
                    let limit = try TaskRateLimit(text)
                    if limit.isLimited { global[name] = limit }
                } catch {
                    logger.error(
                        "invalid global rate limit; the task runs without one",
                        metadata: ["celery.task.name": "\(name)", "rate_limit": "\(text)", "error": "\(error)"]
                    )
                }
            }
        }
        globalRates = global
    }

    /// Loads the shared revoked set before the worker consumes, so a task revoked before it started is not run.
    package func loadRevoked(logger: Logger) async {
        do {
            let count = try await revoked.load()
            if count > 0 { logger.info("\(count) revoked task id(s) loaded from Redis") }
        } catch {
            logger.warning("cannot load the revoked task ids from Redis yet", metadata: ["error": "\(error)"])
        }
    }

    package var hooks: ControlHooks {
        get { hookStore.withLock { $0 } }
        set { hookStore.withLock { $0 = newValue } }
    }

    package func setTimeLimits(_ limits: TimeLimitOverride, for taskName: String) {
        timeLimits.withLock { $0[taskName] = limits }
    }

    package func timeLimits(for taskName: String) -> TimeLimitOverride? {
        timeLimits.withLock { $0[taskName] }
    }

    /// Lamport clock: a received value moves it past that value.
    package func adjustClock(_ other: Int) {
        clock.withLock { $0 = max($0, other) + 1 }
    }

    package func forwardClock() -> Int {
        clock.withLock {
            $0 += 1
            return $0
        }
    }

    package var clockValue: Int { clock.withLock { $0 } }
}

/// The queues the fetch loop consumes, changed by `add_consumer` / `cancel_consumer`, in kombu's round-robin order.
package final class ConsumedQueues: Sendable {
    private struct State {
        var queues: [String] {
            didSet { rotations = Self.rotations(of: queues) }
        }
        /// The lists of each fetch of a round-robin cycle, made once per change of the queues: the fetch loop asks
        /// for them before every pop, and an idle wait compares them with the ones it watched last.
        private(set) var rotations: [[String]]
        /// The queue the next fetch starts with.
        var next = 0

        init(_ queues: [String]) {
            self.queues = queues
            rotations = Self.rotations(of: queues)
        }

        /// Starting with each queue in turn: every queue at each priority step.
        static func rotations(of queues: [String]) -> [[String]] {
            queues.indices.map { start in KombuLayout.lists(queues: rotated(queues, start: start)) }
        }

        static func rotated(_ queues: [String], start: Int) -> [String] {
            Array(queues[start...] + queues[..<start])
        }
    }

    private let state: Mutex<State>

    package init(_ queues: [String]) {
        state = Mutex(State(queues))
    }

    /// The queues, the one the next fetch starts with first.
    package var current: [String] {
        state.withLock { state in
            state.queues.isEmpty ? [] : State.rotated(state.queues, start: state.next % state.queues.count)
        }
    }

    /// The lists to pop from next (every queue at each priority step), then rotates the queues: the next fetch
    /// starts with the next queue (kombu's round_robin cycle).
    package func nextLists() -> [String] {
        state.withLock { state in
            guard !state.rotations.isEmpty else { return [] }
            let lists = state.rotations[state.next % state.rotations.count]
            state.next = (state.next + 1) % state.rotations.count
            return lists
        }
    }

    /// Adds a queue; false if it is consumed already.
    @discardableResult
    package func add(_ queue: String) -> Bool {
        state.withLock { state in
            guard !state.queues.contains(queue) else { return false }
            state.queues.append(queue)
            return true
        }
    }

    package func remove(_ queue: String) {
        state.withLock { $0.queues.removeAll { $0 == queue } }
    }
}

/// The error a terminated handler's task ends with (`control revoke --terminate`).
package struct TaskTerminated: Error, Sendable {}

/// Lets `revoke(terminate=True)` stop a running handler: firing it cancels the handler and fails the task with
/// ``TaskTerminated`` at once, as the hard time limit does (a handler that ignores cancellation is abandoned).
package final class TaskTermination: Sendable {
    package init() {}

    private struct State {
        var fired = false
        var action: (@Sendable () -> Void)?
    }

    private let state = Mutex(State())

    package var isFired: Bool { state.withLock { $0.fired } }

    /// Runs `action` when fired (at once if it already was).
    package func onFire(_ action: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            if state.fired { return true }
            state.action = action
            return false
        }
        if now { action() }
    }

    package func fire() {
        let action = state.withLock { state -> (@Sendable () -> Void)? in
            guard !state.fired else { return nil }
            state.fired = true
            defer { state.action = nil }
            return state.action
        }
        action?()
    }
}

/// The tasks running now (Celery's `active_requests`), and how many of each name have finished.
package final class ActiveRequests: Sendable {
    package struct Entry: Sendable {
        package var message: TaskMessage
        /// Unix time the handler started.
        package var timeStart: Double
        package var acknowledged: Bool
        package var termination: TaskTermination
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var totals: [String: Int] = [:]
    }

    private let state = Mutex(State())

    /// Records a task as running; the returned termination stops it.
    package func begin(_ message: TaskMessage, acknowledged: Bool) -> TaskTermination {
        let termination = TaskTermination()
        let entry = Entry(
            message: message,
            timeStart: CeleryTimestamp.now().secondsSince1970,
            acknowledged: acknowledged,
            termination: termination
        )
        state.withLock { $0.entries[message.id] = entry }
        return termination
    }

    /// Records that a task finished (whatever its outcome).
    package func end(_ message: TaskMessage, _ termination: TaskTermination) {
        state.withLock { state in
            if state.entries[message.id]?.termination === termination { state.entries[message.id] = nil }
            state.totals[message.taskName, default: 0] += 1
        }
    }

    package var snapshot: [Entry] {
        state.withLock { $0.entries.values.sorted { $0.timeStart < $1.timeStart } }
    }

    package func entry(_ id: String) -> Entry? { state.withLock { $0.entries[id] } }

    /// How many tasks run now (what `worker-heartbeat` events report as `active`).
    package var count: Int { state.withLock { $0.entries.count } }

    package var totals: [String: Int] { state.withLock { $0.totals } }

    /// Fires the terminations of the running tasks among `ids`; returns those ids.
    package func terminate(_ ids: [String]) -> [String] {
        let found = state.withLock { state in ids.compactMap { id in state.entries[id].map { (id, $0.termination) } } }
        for (_, termination) in found { termination.fire() }
        return found.map(\.0)
    }
}

/// A one-way latch: `wait(upTo:)` returns once `signal()` was called, or after the timeout (it polls every 5 ms;
/// it is used once, at start-up).
package final class OneTimeSignal: Sendable {
    private let signalled = Atomic<Bool>(false)

    package func signal() { signalled.store(true, ordering: .releasing) }

    package var isSignalled: Bool { signalled.load(ordering: .acquiring) }

    package func wait(upTo timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !isSignalled, ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
