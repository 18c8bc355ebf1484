import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Celery's two kinds of errbacks (celery/backends/base.py `_call_task_errbacks`): one whose handler leaves more
/// than one parameter free is called in the failing worker with `(request, exc, traceback)`; any other is sent as a
/// task with the failed task's id.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerErrbackTests {
    /// `tasks.*` plus `test.new_style(request, exc, tb, key)`, which RPUSHes the failed id, the exception's type
    /// and whether a traceback came to `key`, and `test.two(request_id, label)`, old-style once `label` is stored.
    static func registry() -> TaskRegistry {
        var registry = TestRedis.defaultRegistry()
        registry.register("test.new_style", parameters: ["request", "exc", "tb", "key"]) { context, arguments in
            guard arguments.args.count == 4, let key = arguments.args[3].stringValue else {
                throw PythonException.typeError("new_style() takes 4 positional arguments")
            }
            let request = arguments.args[0]
            let type = arguments.args[1]["exc_type"]?.stringValue ?? "?"
            let traceback = arguments.args[2].stringValue?.hasPrefix("Traceback") == true ? "tb" : "no tb"
            _ = try await context.redis.send(
                RESPCommand(
                    "RPUSH",
                    key,
                    request["id"]?.stringValue ?? "?",
                    request["task"]?.stringValue ?? "?",
                    type,
                    traceback
                )
            )
            return .null
        }
        registry.register("test.two", parameters: ["request_id", "label"]) { context, arguments in
            let label = arguments.args.count > 1 ? arguments.args[1] : arguments.kwargs["label"]
            guard let id = arguments.args.first?.stringValue, let label = label?.stringValue else {
                throw PythonException.typeError("two() missing 1 required positional argument")
            }
            _ = try await context.redis.send(RESPCommand("RPUSH", id, label))
            return .null
        }
        return registry
    }

    static func signature(_ name: String, _ args: [JSONValue] = [], kwargs: JSONObject = [:]) -> JSONValue {
        [
            "task": .string(name), "args": .array(args), "kwargs": .object(kwargs), "options": [:],
            "subtask_type": nil, "immutable": false,
        ]
    }

    static func list(_ redis: RedisClient, _ key: String, count: Int) async throws -> [String] {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let reply = try await redis.send(RESPCommand("LRANGE", key, "0", "-1"))
            let items = reply.array?.compactMap(\.string) ?? []
            if items.count >= count { return items }
            try await Task.sleep(for: .milliseconds(20))
        }
        return []
    }

    @Test func aNewStyleErrbackRunsInPlaceWithTheRequestTheExceptionAndTheTraceback() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2), registry: Self.registry())
        { _, redis in
            let key = "errback-\(UUID().uuidString)"
            var failing = OutgoingTask(name: "tasks.fail", args: ["boom"], queue: queue)
            failing.errbacks = [Self.signature("test.new_style", [.string(key)])]
            try await TestRedis.push(redis, failing.list, failing.envelope())
            let meta = try await TestRedis.result(redis, failing.id)
            #expect(meta["status"] == "FAILURE")
            #expect(try await Self.list(redis, key, count: 4) == [failing.id, "tasks.fail", "ValueError", "tb"])
            // Called, not sent: no task of that name went to the queue and no result was stored for one.
            let queued = try await redis.send(RESPCommand("LLEN", queue))
            #expect(queued.int == 0)
        }
    }

    @Test func anErrbackWithOneFreeParameterIsSentWithTheFailedID() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2), registry: Self.registry())
        { _, redis in
            var failing = OutgoingTask(name: "tasks.fail", args: ["boom"], queue: queue)
            // label stored by position and by keyword: one parameter left, so old-style, called as a task.
            failing.errbacks = [
                Self.signature("test.two", ["positional"]),
                Self.signature("test.two", kwargs: ["label": "keyword"]),
            ]
            try await TestRedis.push(redis, failing.list, failing.envelope())
            #expect(Set(try await Self.list(redis, failing.id, count: 2)) == ["positional", "keyword"])
        }
    }

    @Test func anErrbackThatThrowsIsLoggedAndTheFailureIsStillStored() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2), registry: Self.registry())
        { _, redis in
            var failing = OutgoingTask(name: "tasks.fail", args: ["boom"], queue: queue)
            // No key: the errback's own TypeError is logged; the task's FAILURE is stored all the same.
            failing.errbacks = [Self.signature("test.new_style")]
            try await TestRedis.push(redis, failing.list, failing.envelope())
            let meta = try await TestRedis.result(redis, failing.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "ValueError")
        }
    }
}

/// Celery's per-task `acks_late` (`TaskOptions.acksLate`) over the worker's setting.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct PerTaskAcksLateTests {
    /// `test.reject_once(key)`: INCR key; rejected with requeue on the first delivery; returns the count.
    static func registry(acksLate: Bool?) -> TaskRegistry {
        var registry = TestRedis.defaultRegistry()
        registry.register("test.reject_once", parameters: ["key"], options: TaskOptions(acksLate: acksLate)) {
            (context, key: String) in
            let count = try await context.redis.send(RESPCommand("INCR", key)).int ?? 0
            guard context.deliveryInfo.redelivered else { throw TaskReject(requeue: true) }
            return count
        }
        return registry
    }

    @Test func aLateAckTaskOnAnEarlyAckWorkerIsRedeliveredWhenItRejectsWithRequeue() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = WorkerConfiguration(queues: [queue], concurrency: 2)
        try await TestRedis.withWorker(configuration, registry: Self.registry(acksLate: true)) { _, redis in
            let key = "reject-once-\(UUID().uuidString)"
            let task = OutgoingTask(name: "test.reject_once", args: [.string(key)], queue: queue)
            try await TestRedis.push(redis, task.list, task.envelope())
            let meta = try await TestRedis.result(redis, task.id)
            #expect(meta["status"] == "SUCCESS")
            #expect(meta["result"] == 2)
        }
    }

    @Test func anEarlyAckTaskOnALateAckWorkerIsNotRedelivered() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = WorkerConfiguration(queues: [queue], concurrency: 2, acksLate: true)
        try await TestRedis.withWorker(configuration, registry: Self.registry(acksLate: false)) { _, redis in
            let key = "reject-once-\(UUID().uuidString)"
            let task = OutgoingTask(name: "test.reject_once", args: [.string(key)], queue: queue)
            try await TestRedis.push(redis, task.list, task.envelope())
            // Acked before it ran: Celery's Reject(requeue=True) then does nothing; it ran once, stored nothing.
            try await Task.sleep(for: .seconds(1))
            let count = try await redis.send(RESPCommand("GET", key))
            #expect(count.string == "1")
            let stored = try await redis.send(RESPCommand("EXISTS", "celery-task-meta-\(task.id)"))
            #expect(stored.int == 0)
        }
    }
}
