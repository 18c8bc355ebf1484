import CeleryProtocol
import DequeModule
import JSON
import Logging
import RESP
import Redis
import Synchronization

/// Publishes Celery's monitoring events (`celery events`, `celery.events.state.State`, Flower) for one worker:
/// `worker-online`, a `worker-heartbeat` every `heartbeatInterval`, `worker-offline` at the end, and, while task
/// events are enabled (`-E`, or the `enable_events` control command), one event per task state change (sent, as
/// Celery's worker sends them, in `task.multi` messages whose body is a list of events).
///
/// Events are fire-and-forget (PUBLISH, lost when nobody listens, as in Celery): calls only queue them, and one
/// loop publishes what is queued in pipelined batches, so a task never waits on a monitor. While Redis is
/// unreachable the queue keeps the newest `outboxLimit` events.
public final class EventDispatcher: Sendable {
    /// The node name the events carry.
    public let hostname: String
    /// Seconds between heartbeats (`freq`); nil sends none (`--without-heartbeat`), only online and offline.
    public let heartbeatInterval: Duration?
    /// How many unsent events are kept while Redis is unreachable; older ones are dropped.
    public static let outboxLimit = 10_000

    package let client: RedisClient
    package let logger: Logger
    /// `/{db}.celeryev/`: kombu's fanout channel prefix for the `celeryev` exchange (docs/protocol.md §1.7).
    package let channelPrefix: String
    package let origin: CeleryEvent.Origin
    private let taskEvents: Atomic<Bool>
    private let activeCount = Atomic<Int>(0)
    private let processedCount = Atomic<Int>(0)
    private let outbox = Mutex(Outbox())

    /// An event stamped with its clock and time, encoded by the sending loop (off the task's path).
    private struct Stamped {
        var event: CeleryEvent
        var clock: Int
        var timestamp: Double
    }

    private struct Outbox {
        /// Lamport clock of the last event queued: taken under the lock, so clocks rise in publishing order.
        var clock = 0
        var messages: Deque<Stamped> = []
        var waiter: CheckedContinuation<Void, Never>?
        var dropped = 0
        var closed = false
    }

    /// - Parameters:
    ///   - client: the broker connection events are published on.
    ///   - taskEvents: send task events from the start (`-E`).
    public init(
        client: RedisClient,
        hostname: String,
        taskEvents: Bool,
        heartbeatInterval: Duration? = .seconds(2),
        logger: Logger
    ) {
        self.client = client
        self.hostname = hostname
        self.heartbeatInterval = heartbeatInterval
        self.logger = logger
        self.channelPrefix = "/\(client.configuration.database).celeryev/"
        self.origin = CeleryEvent.Origin(hostname: hostname, utcOffset: Self.hoursWestOfUTC(), pid: Int(getpid()))
        self.taskEvents = Atomic(taskEvents)
    }

    // MARK: - Control (enable_events, disable_events, heartbeat)

    /// True while task events are sent.
    public var taskEventsEnabled: Bool { taskEvents.load(ordering: .relaxed) }

    /// Turns task events on or off (the `enable_events` / `disable_events` control commands). Worker events are
    /// sent either way.
    public func setEnabled(_ enabled: Bool) {
        taskEvents.store(enabled, ordering: .relaxed)
    }

    /// Sends a `worker-heartbeat` now (the `heartbeat` control command).
    public func sendHeartbeat() {
        enqueue(.worker("heartbeat", status()))
    }

    // MARK: - Task events

    /// `task-revoked`, for the revocation path: `expired` when discarded for its `expires`, `terminated` and
    /// `signum` when a running task was stopped.
    public func taskRevoked(id: String, terminated: Bool = false, signum: Int? = nil, expired: Bool = false) {
        guard taskEventsEnabled else { return }
        enqueue(.taskRevoked(id: id, terminated: terminated, signum: signum, expired: expired))
    }

    /// `task-rejected`: a message was rejected, back to its queue if `requeue`.
    public func taskRejected(id: String, requeue: Bool) {
        guard taskEventsEnabled else { return }
        enqueue(.taskRejected(id: id, requeue: requeue))
    }

    package func taskReceived(_ message: TaskMessage) {
        guard taskEventsEnabled else { return }
        enqueue(.taskReceived(message))
    }

    /// A task starts running: counted in `active` and `processed` (events on or off), and `task-started`.
    package func taskStarted(id: String) {
        activeCount.add(1, ordering: .relaxed)
        processedCount.add(1, ordering: .relaxed)
        guard taskEventsEnabled else { return }
        enqueue(.taskStarted(id: id))
    }

    /// A task that started has finished, however it ended.
    package func taskFinished() {
        activeCount.subtract(1, ordering: .relaxed)
    }

    package func taskSucceeded(id: String, result: JSONValue, runtime: Duration) {
        guard taskEventsEnabled else { return }
        enqueue(.taskSucceeded(id: id, result: result, runtime: CeleryEvent.seconds(runtime)))
    }

    package func taskFailed(id: String, exception: String, traceback: String?) {
        guard taskEventsEnabled else { return }
        enqueue(.taskFailed(id: id, exception: exception, traceback: traceback))
    }

    package func taskRetried(id: String, exception: String, traceback: String?) {
        guard taskEventsEnabled else { return }
        enqueue(.taskRetried(id: id, exception: exception, traceback: traceback))
    }

    /// Tasks running now.
    public var active: Int { activeCount.load(ordering: .relaxed) }
    /// Tasks started since the worker started.
    public var processed: Int { processedCount.load(ordering: .relaxed) }

    // MARK: - Running

    /// Sends `worker-online`, then heartbeats and queued events until `close()`; then `worker-offline` and what is
    /// still queued (one attempt), and returns.
    package func run() async {
        enqueue(.worker("online", status()))
        await withTaskGroup(of: Void.self) { group in
            if let heartbeatInterval {
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: heartbeatInterval)
                        if Task.isCancelled || self.isClosed { break }
                        self.sendHeartbeat()
                    }
                }
            }
            await withTaskCancellationHandler {
                var reachable = true
                while let batch = await nextBatch() {
                    if !reachable && isClosed {
                        // Shutting down with Redis unreachable: do not hold the exit up for a reconnect.
                        outbox.withLock { $0.dropped += batch.count }
                        continue
                    }
                    reachable = await publish(batch)
                }
            } onCancel: {
                self.close()
            }
            group.cancelAll()
        }
        let dropped = outbox.withLock { $0.dropped }
        if dropped > 0 {
            logger.warning("monitoring events dropped while Redis was unreachable", metadata: ["count": "\(dropped)"])
        }
    }

    /// Queues `worker-offline` and lets `run()` finish once everything queued has been tried.
    package func close() {
        let event = CeleryEvent.worker("offline", status())
        let timestamp = CeleryTimestamp.now().secondsSince1970
        let waiter = outbox.withLock { outbox -> CheckedContinuation<Void, Never>? in
            guard !outbox.closed else { return nil }
            outbox.clock += 1
            outbox.messages.append(Stamped(event: event, clock: outbox.clock, timestamp: timestamp))
            outbox.closed = true
            defer { outbox.waiter = nil }
            return outbox.waiter
        }
        waiter?.resume()
    }

    private var isClosed: Bool { outbox.withLock { $0.closed } }

    private func status() -> CeleryEvent.WorkerStatus {
        CeleryEvent.WorkerStatus(
            frequency: heartbeatInterval.map(CeleryEvent.seconds) ?? 2.0,
            active: active,
            processed: processed,
            loadAverage: Self.loadAverage()
        )
    }

    /// Stamps an event with the clock and the time, and queues it.
    private func enqueue(_ event: CeleryEvent) {
        let timestamp = CeleryTimestamp.now().secondsSince1970
        let waiter = outbox.withLock { outbox -> CheckedContinuation<Void, Never>? in
            guard !outbox.closed else { return nil }
            outbox.clock += 1
            outbox.messages.append(Stamped(event: event, clock: outbox.clock, timestamp: timestamp))
            if outbox.messages.count > Self.outboxLimit {
                outbox.messages.removeFirst()
                outbox.dropped += 1
            }
            defer { outbox.waiter = nil }
            return outbox.waiter
        }
        waiter?.resume()
    }

    /// The PUBLISH commands for a batch: worker events one by one; task events grouped as Celery's worker
    /// groups them, into `task.multi` messages whose body is a list of events (receivers accept both).
    private func commands(for batch: [Stamped]) -> [RESPCommand] {
        var commands: [RESPCommand] = []
        var tasks: [JSONValue] = []
        func flushTasks() {
            guard !tasks.isEmpty else { return }
            commands.append(publish(routingKey: "task.multi", body: .array(tasks)))
            tasks.removeAll(keepingCapacity: true)
        }
        for stamped in batch {
            let body = stamped.event.body(origin: origin, clock: stamped.clock, timestamp: stamped.timestamp)
            if stamped.event.type.hasPrefix("task-") {
                tasks.append(body)
                if tasks.count == Self.multiLimit { flushTasks() }
            } else {
                flushTasks()
                commands.append(publish(routingKey: stamped.event.routingKey, body: body))
            }
        }
        flushTasks()
        return commands
    }

    /// At most this many task events share one `task.multi` message.
    package static let multiLimit = 100

    private func publish(routingKey: String, body: JSONValue) -> RESPCommand {
        let payload = CeleryEvent.envelope(
            body: body,
            hostname: hostname,
            routingKey: routingKey,
            deliveryTag: OutgoingTask.newID()
        )
        return RESPCommand("PUBLISH", channelPrefix + routingKey, RESPBytes(payload))
    }

    /// Everything queued (at most 512 at a time), waiting while nothing is; nil once closed and empty.
    private func nextBatch() async -> [Stamped]? {
        while true {
            enum Next {
                case batch([Stamped])
                case finished
                case wait
            }
            let next = outbox.withLock { outbox -> Next in
                if !outbox.messages.isEmpty {
                    let count = min(outbox.messages.count, 512)
                    let batch = Array(outbox.messages.prefix(count))
                    outbox.messages.removeFirst(count)
                    return .batch(batch)
                }
                return outbox.closed ? .finished : .wait
            }
            switch next {
            case .batch(let batch): return batch
            case .finished: return nil
            case .wait:
                await withCheckedContinuation { continuation in
                    let resumeNow = outbox.withLock { outbox -> Bool in
                        if !outbox.messages.isEmpty || outbox.closed { return true }
                        outbox.waiter = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }

    /// Publishes a batch; false if Redis could not be reached.
    private func publish(_ batch: [Stamped]) async -> Bool {
        let commands = commands(for: batch)
        do {
            _ = try await client.pipeline(commands)
            return true
        } catch {
            // Fire-and-forget as in Celery: a monitor that missed events catches up with the next heartbeat.
            outbox.withLock { $0.dropped += batch.count }
            logger.debug("cannot publish monitoring events", metadata: ["error": "\(error)"])
            return false
        }
    }

    // MARK: - Host facts

    /// Hours west of UTC, as Celery's `utcoffset()` (UTC+5:30 → -5.5).
    package static func hoursWestOfUTC() -> Double {
        var now = time(nil)
        var local = tm()
        guard localtime_r(&now, &local) != nil else { return 0 }
        // `0 - x`, not `-x`: UTC must be 0.0 as Python sends it, never -0.0.
        return 0 - Double(local.tm_gmtoff) / 3600
    }

    /// The 1, 5 and 15 minute load averages, rounded to 2 places as Celery sends them.
    package static func loadAverage() -> [Double] {
        var values = [Double](repeating: 0, count: 3)
        guard getloadavg(&values, 3) == 3 else { return [0, 0, 0] }
        return values.map { ($0 * 100).rounded() / 100 }
    }
}

extension CeleryEvent {
    /// A duration in seconds, as events carry `runtime` and `freq`.
    package static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
