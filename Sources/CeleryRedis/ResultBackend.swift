import CeleryProtocol
import JSON
import Logging
import RESP
import Redis
import Synchronization

/// Celery's Redis result backend: `celery-task-meta-<id>` written with SETEX and PUBLISHed on the channel of
/// the same name, so `AsyncResult.get()` wakes up.
///
/// Writes are batched: every write waiting when a flush starts goes in one `EVALSHA` that, per key, skips the
/// write if a SUCCESS is already stored (Celery's GET guard, made atomic), then SETEX + PUBLISH; when results and
/// acks go to the same Redis, the same script then acks the batch's messages.
package struct ResultBackend: Sendable {
    package static let keyPrefix = "celery-task-meta-"

    /// KEYS: the n meta keys, then (only when there are tags) `unacked` and `unacked_index`, then (only with the
    /// crash guard) its running marks and crash counts. ARGV[1]: TTL in seconds (0: no expiry); ARGV[2]: n;
    /// ARGV[2 + i]: the payload for KEYS[i]; ARGV[n + 3...]: delivery tags to ack (kombu's HDEL + ZREM, and the
    /// crash guard's HDELs), after the results, so under acks_late no message leaves `unacked` before its result
    /// is stored, and none loses its running mark before it leaves `unacked`.
    package static let storeScript = RedisScript(
        """
        local ttl = tonumber(ARGV[1])
        local n = tonumber(ARGV[2])
        for i = 1, n do
          local key = KEYS[i]
          local current = redis.call('GET', key)
          if not (current and string.find(current, '^{"status": *"SUCCESS"')) then
            if ttl > 0 then
              redis.call('SETEX', key, ttl, ARGV[i + 2])
            else
              redis.call('SET', key, ARGV[i + 2])
            end
            redis.call('PUBLISH', key, ARGV[i + 2])
          end
        end
        if #ARGV > n + 2 then
          redis.call('HDEL', KEYS[n + 1], unpack(ARGV, n + 3))
          redis.call('ZREM', KEYS[n + 2], unpack(ARGV, n + 3))
          if #KEYS > n + 2 then
            redis.call('HDEL', KEYS[n + 3], unpack(ARGV, n + 3))
            redis.call('HDEL', KEYS[n + 4], unpack(ARGV, n + 3))
          end
        end
        return n
        """
    )

    /// The `storeScript` call for a batch: keys and arguments. `acks` go in only when the results' Redis is the
    /// broker's; `crashGuard` (the running marks' and crash counts' keys) when the acks clear its records too.
    package static func storeCall(
        results: [(key: String, payload: String)],
        acks: [String],
        ttl: Int,
        unackedKey: String,
        unackedIndexKey: String,
        crashGuard: CrashGuardKeys? = nil
    ) -> (keys: [String], arguments: [String]) {
        var keys = results.map(\.key)
        var arguments = [String(ttl), String(results.count)]
        arguments.reserveCapacity(2 + results.count + acks.count)
        for result in results { arguments.append(result.payload) }
        if !acks.isEmpty {
            keys += [unackedKey, unackedIndexKey]
            if let crashGuard { keys += [crashGuard.running, crashGuard.crashCounts] }
            arguments += acks
        }
        return (keys, arguments)
    }

    package var expires: Duration?
    package var extended: Bool
    package var hostname: String

    package init(expires: Duration?, extended: Bool, hostname: String) {
        self.expires = expires
        self.extended = extended
        self.hostname = hostname
    }

    /// The meta document, keys in Celery's order: status, result, traceback, children, date_done, group_id,
    /// parent_id, [extended fields], task_id.
    package func meta(
        state: TaskState,
        result: JSONValue,
        traceback: String? = nil,
        message: TaskMessage?,
        taskID: String,
        children: JSONValue = .array([])
    ) -> JSONValue {
        meta(
            status: state.rawValue,
            ready: state.isReady,
            result: result,
            traceback: traceback,
            message: message,
            taskID: taskID,
            children: children
        )
    }

    /// The meta document of any state, a task's own custom ones (`PROGRESS`) included; `ready` sets `date_done`.
    package func meta(
        status: String,
        ready: Bool,
        result: JSONValue,
        traceback: String? = nil,
        message: TaskMessage?,
        taskID: String,
        children: JSONValue = .array([])
    ) -> JSONValue {
        var object: JSONObject = [
            "status": .string(status),
            "result": result,
            "traceback": traceback.map { .string($0) } ?? .null,
            "children": children,
            "date_done": ready ? .string(CeleryTimestamp.now().iso8601) : .null,
        ]
        if let message {
            if let group = message.groupID { object["group_id"] = .string(group) }
            if let parent = message.parentID { object["parent_id"] = .string(parent) }
            if extended {
                object["name"] = .string(message.taskName)
                object["args"] = .array(message.args)
                object["kwargs"] = .object(message.kwargs)
                object["worker"] = .string(hostname)
                object["retries"] = .int(message.retries)
                object["queue"] = .string(message.routingKey)
            }
        }
        object["task_id"] = .string(taskID)
        return .object(object)
    }
}

/// The crash guard's two hashes, which an ack clears of its delivery tags.
package struct CrashGuardKeys: Sendable {
    package var running: String
    package var crashCounts: String

    package init(running: String, crashCounts: String) {
        self.running = running
        self.crashCounts = crashCounts
    }
}

/// Collects result writes and acks from finished tasks and sends them in batches, results before acks (so with
/// acks_late a message leaves `unacked` only after its result is stored). A failed flush is retried with
/// backoff; nothing is dropped.
package final class WriteBatcher: Sendable {
    private struct State {
        var results: [(key: String, payload: String)] = []
        var acks: [String] = []
        var wakeUp: CheckedContinuation<Void, Never>?
        var closed = false
    }

    private let state = Mutex(State())
    package let backend: RedisClient
    package let broker: RedisClient
    package let unackedKey: String
    package let unackedIndexKey: String
    package let resultTTL: Int
    /// Set when the worker marks running messages (acks-late with the crash guard): acks clear the marks too.
    package let crashGuard: CrashGuardKeys?
    package let logger: Logger
    package static let maximumBatch = 512
    /// How many times a flush is tried once the worker is shutting down (about 20 s with the backoff).
    package static let attemptsAfterClose = 12

    package init(
        backend: RedisClient,
        broker: RedisClient,
        layout: KombuLayout,
        resultTTL: Int,
        clearsRunningMarks: Bool = false,
        logger: Logger
    ) {
        self.backend = backend
        self.broker = broker
        self.unackedKey = layout.unackedKey
        self.unackedIndexKey = layout.unackedIndexKey
        self.resultTTL = resultTTL
        self.crashGuard =
            clearsRunningMarks ? CrashGuardKeys(running: layout.runningKey, crashCounts: layout.crashCountKey) : nil
        self.logger = logger
    }

    package func storeResult(taskID: String, meta: JSONValue) {
        let payload = Self.payload(taskID: taskID, meta: meta)
        enqueue { $0.results.append((ResultBackend.keyPrefix + taskID, payload)) }
    }

    /// The meta as stored; a result too deep to serialize becomes the FAILURE it is.
    package static func payload(taskID: String, meta: JSONValue) -> String {
        do {
            return String(decoding: try meta.serialize(), as: UTF8.self)
        } catch {
            let failure: JSONValue = .object([
                "status": "FAILURE",
                "result": .object([
                    "exc_type": "ValueError", "exc_message": .array([.string("result not serializable: \(error)")]),
                    "exc_module": "builtins",
                ]),
                "traceback": .null, "children": .array([]),
                "date_done": .string(CeleryTimestamp.now().iso8601), "task_id": .string(taskID),
            ])
            return failure.serializedString()
        }
    }

    package func ack(deliveryTag: String) {
        enqueue { $0.acks.append(deliveryTag) }
    }

    private func enqueue(_ change: (inout State) -> Void) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            change(&state)
            defer { state.wakeUp = nil }
            return state.wakeUp
        }
        waiter?.resume()
    }

    private var isClosed: Bool { state.withLock { $0.closed } }

    /// Stops after everything queued so far has been written.
    package func close() {
        enqueue { $0.closed = true }
    }

    /// Writes batches until closed and drained.
    package func run() async {
        let backoff = RedisBackoff(initial: .milliseconds(50), maximum: .seconds(2))
        while true {
            let (results, acks, closed) = await nextBatch()
            if results.isEmpty && acks.isEmpty {
                if closed { return }
                continue
            }
            do {
                try await backoff.retry(
                    // Shutting down and Redis stays away: the messages are still in unacked and come back through
                    // the visibility-timeout restore (at-least-once), so stop instead of hanging.
                    shouldStop: { failures in isClosed && failures >= Self.attemptsAfterClose },
                    onFailure: { error, _, _ in
                        logger.warning(
                            "cannot write results/acks to Redis, retrying",
                            metadata: ["error": "\(error)", "pending": "\(results.count + acks.count)"]
                        )
                    },
                    operation: { () throws(RedisError) in try await flush(results: results, acks: acks) }
                )
            } catch {
                logger.error(
                    "giving up writing results/acks at shutdown; their messages stay in unacked",
                    metadata: ["error": "\(error)", "pending": "\(results.count + acks.count)"]
                )
                return
            }
        }
    }

    private func nextBatch() async -> ([(key: String, payload: String)], [String], Bool) {
        while true {
            let taken = state.withLock { state -> ([(key: String, payload: String)], [String], Bool)? in
                if state.results.isEmpty && state.acks.isEmpty {
                    return state.closed ? ([], [], true) : nil
                }
                let results = Array(state.results.prefix(Self.maximumBatch))
                state.results.removeFirst(results.count)
                let acks = Array(state.acks.prefix(Self.maximumBatch * 2))
                state.acks.removeFirst(acks.count)
                return (results, acks, false)
            }
            if let taken { return taken }
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if !state.results.isEmpty || !state.acks.isEmpty || state.closed { return true }
                    state.wakeUp = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// kombu's ack of these delivery tags: out of `unacked` and `unacked_index` (and the crash guard's hashes).
    package static func ackCommands(
        _ acks: [String],
        unackedKey: String,
        unackedIndexKey: String,
        crashGuard: CrashGuardKeys? = nil
    ) -> [RESPCommand] {
        var commands = [RESPCommand("HDEL", unackedKey, acks), RESPCommand("ZREM", unackedIndexKey, acks)]
        if let crashGuard {
            commands.append(RESPCommand("HDEL", crashGuard.running, acks))
            commands.append(RESPCommand("HDEL", crashGuard.crashCounts, acks))
        }
        return commands
    }

    private func flush(results: [(key: String, payload: String)], acks: [String]) async throws(RedisError) {
        // One Redis for both: the acks ride in the results' script (one round trip, and atomic).
        let together = backend === broker
        if !results.isEmpty {
            let call = ResultBackend.storeCall(
                results: results,
                acks: together ? acks : [],
                ttl: resultTTL,
                unackedKey: unackedKey,
                unackedIndexKey: unackedIndexKey,
                crashGuard: crashGuard
            )
            try await backend.evaluate(ResultBackend.storeScript, keys: call.keys, arguments: call.arguments)
            if together { return }
        }
        if !acks.isEmpty {
            let replies = try await broker.pipeline(
                Self.ackCommands(
                    acks,
                    unackedKey: unackedKey,
                    unackedIndexKey: unackedIndexKey,
                    crashGuard: crashGuard
                )
            )
            for reply in replies { _ = try reply.get() }
        }
    }
}
