import JSON
import Logging
import Redis
import Synchronization

/// The state remote control reads and changes while the worker runs: running tasks, the revoked set, rate and
/// time limits set by `control`, the consumed queues, the Lamport clock, and the hooks to the event dispatcher.
final class WorkerControlState: Sendable {
    let revoked: RevokedTasks
    let localRates = LocalRateLimits()
    /// Global limits from handler options (`TaskOptions.globalRateLimit`), fixed for the worker's life.
    let globalRates: [String: TaskRateLimit]
    let globalLimiter: GlobalRateLimiter
    let rateLimited = RateLimitedMessages()
    let active = ActiveRequests()
    let queues: ConsumedQueues
    let startTime = CeleryTimestamp.now()
    /// Signalled once the pidbox subscription is confirmed (or remote control is off).
    let listening = OneTimeSignal()
    private let timeLimits = Mutex<[String: TimeLimitOverride]>([:])
    private let hookStore = Mutex(ControlHooks())
    private let clock = Mutex(0)

    struct TimeLimitOverride: Sendable {
        var soft: Double?
        var hard: Double?
    }

    init(configuration: WorkerConfiguration, registry: TaskRegistry, broker: RedisClient, logger: Logger) {
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
    func loadRevoked(logger: Logger) async {
        do {
            let count = try await revoked.load()
            if count > 0 { logger.info("\(count) revoked task id(s) loaded from Redis") }
        } catch {
            logger.warning("cannot load the revoked task ids from Redis yet", metadata: ["error": "\(error)"])
        }
    }

    var hooks: ControlHooks {
        get { hookStore.withLock { $0 } }
        set { hookStore.withLock { $0 = newValue } }
    }

    func setTimeLimits(_ limits: TimeLimitOverride, for taskName: String) {
        timeLimits.withLock { $0[taskName] = limits }
    }

    func timeLimits(for taskName: String) -> TimeLimitOverride? {
        timeLimits.withLock { $0[taskName] }
    }

    /// Lamport clock: a received value moves it past that value.
    func adjustClock(_ other: Int) {
        clock.withLock { $0 = max($0, other) + 1 }
    }

    func forwardClock() -> Int {
        clock.withLock {
            $0 += 1
            return $0
        }
    }

    var clockValue: Int { clock.withLock { $0 } }
}

/// The queues the fetch loop consumes, changed by `add_consumer` / `cancel_consumer`, in kombu's round-robin order.
final class ConsumedQueues: Sendable {
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

    init(_ queues: [String]) {
        state = Mutex(State(queues))
    }

    /// The queues, the one the next fetch starts with first.
    var current: [String] {
        state.withLock { state in
            state.queues.isEmpty ? [] : State.rotated(state.queues, start: state.next % state.queues.count)
        }
    }

    /// The lists to pop from next (every queue at each priority step), then rotates the queues: the next fetch
    /// starts with the next queue (kombu's round_robin cycle).
    func nextLists() -> [String] {
        state.withLock { state in
            guard !state.rotations.isEmpty else { return [] }
            let lists = state.rotations[state.next % state.rotations.count]
            state.next = (state.next + 1) % state.rotations.count
            return lists
        }
    }

    /// Adds a queue; false if it is consumed already.
    @discardableResult
    func add(_ queue: String) -> Bool {
        state.withLock { state in
            guard !state.queues.contains(queue) else { return false }
            state.queues.append(queue)
            return true
        }
    }

    func remove(_ queue: String) {
        state.withLock { $0.queues.removeAll { $0 == queue } }
    }
}

/// The error a terminated handler's task ends with (`control revoke --terminate`).
struct TaskTerminated: Error, Sendable {}

/// Lets `revoke(terminate=True)` stop a running handler: firing it cancels the handler and fails the task with
/// ``TaskTerminated`` at once, as the hard time limit does (a handler that ignores cancellation is abandoned).
final class TaskTermination: Sendable {
    private struct State {
        var fired = false
        var action: (@Sendable () -> Void)?
    }

    private let state = Mutex(State())

    var isFired: Bool { state.withLock { $0.fired } }

    /// Runs `action` when fired (at once if it already was).
    func onFire(_ action: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            if state.fired { return true }
            state.action = action
            return false
        }
        if now { action() }
    }

    func fire() {
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
final class ActiveRequests: Sendable {
    struct Entry: Sendable {
        var message: TaskMessage
        /// Unix time the handler started.
        var timeStart: Double
        var acknowledged: Bool
        var termination: TaskTermination
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var totals: [String: Int] = [:]
    }

    private let state = Mutex(State())

    /// Records a task as running; the returned termination stops it.
    func begin(_ message: TaskMessage, acknowledged: Bool) -> TaskTermination {
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
    func end(_ message: TaskMessage, _ termination: TaskTermination) {
        state.withLock { state in
            if state.entries[message.id]?.termination === termination { state.entries[message.id] = nil }
            state.totals[message.taskName, default: 0] += 1
        }
    }

    var snapshot: [Entry] {
        state.withLock { $0.entries.values.sorted { $0.timeStart < $1.timeStart } }
    }

    func entry(_ id: String) -> Entry? { state.withLock { $0.entries[id] } }

    /// How many tasks run now (what `worker-heartbeat` events report as `active`).
    var count: Int { state.withLock { $0.entries.count } }

    var totals: [String: Int] { state.withLock { $0.totals } }

    /// Fires the terminations of the running tasks among `ids`; returns those ids.
    func terminate(_ ids: [String]) -> [String] {
        let found = state.withLock { state in ids.compactMap { id in state.entries[id].map { (id, $0.termination) } } }
        for (_, termination) in found { termination.fire() }
        return found.map(\.0)
    }
}

/// A one-way latch: `wait(upTo:)` returns once `signal()` was called, or after the timeout (it polls every 5 ms;
/// it is used once, at start-up).
final class OneTimeSignal: Sendable {
    private let signalled = Atomic<Bool>(false)

    func signal() { signalled.store(true, ordering: .releasing) }

    var isSignalled: Bool { signalled.load(ordering: .acquiring) }

    func wait(upTo timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !isSignalled, ContinuousClock.now < deadline, !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
