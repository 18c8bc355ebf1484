import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Celery's built-in tasks and stamp revocation, without Redis.
struct BuiltinTasksUnitTests {
    @Test func everyWorkerRegistersCeleryBuiltins() {
        let registry = TestRedis.defaultRegistry().withBuiltins()
        for name in ["celery.map", "celery.starmap", "celery.chunks", "celery.backend_cleanup", "celery.chord_unlock"] {
            #expect(registry[name] != nil, "\(name)")
        }
        #expect(registry["tasks.add"] != nil)
        #expect(registry["celery.map"]?.name == "celery.map")
        #expect(registry["celery.xmap"] == nil)
    }

    @Test func aPackageHandlerOfABuiltinNameWins() {
        var registry = TaskRegistry()
        registry.register("celery.map") { _, _ in "mine" }
        #expect(registry.withBuiltins()["celery.map"]?.parameters == [])
    }

    @Test(arguments: [
        (5, 2, [[0, 1], [2, 3], [4]]),
        (4, 2, [[0, 1], [2, 3]]),
        (2, 10, [[0, 1]]),
        (0, 3, []),
    ])
    func chunksSplitAsCelery(count: Int, size: Int, expected: [[Int]]) {
        let items = (0..<count).map { JSONValue.int($0) }
        #expect(BuiltinTasks.chunked(items, size: size) == expected.map { $0.map { JSONValue.int($0) } })
    }

    static func message(stamps: JSONObject, stampedHeaders: [String]) throws -> TaskMessage {
        let extra: JSONObject = [
            "stamped_headers": .array(stampedHeaders.map { .string($0) }), "stamps": .object(stamps),
        ]
        return try TaskMessage(envelope: TestRedis.envelope(task: "tasks.add", queue: "q", extraHeaders: extra).bytes)
    }

    /// Celery's `Request.revoked()`: a stamp named in `stamped_headers` whose value (or one of its values) was
    /// revoked under that header.
    @Test func stampsMatchAsCelery() throws {
        let stamps = RevokedStamps()
        stamps.add(["monitoring_id": ["m1", 4242]])
        #expect(
            stamps.match(try Self.message(stamps: ["monitoring_id": "m1"], stampedHeaders: ["monitoring_id"])) != nil
        )
        #expect(
            stamps.match(try Self.message(stamps: ["monitoring_id": 4242], stampedHeaders: ["monitoring_id"])) != nil
        )
        #expect(
            stamps.match(try Self.message(stamps: ["monitoring_id": ["x", "m1"]], stampedHeaders: ["monitoring_id"]))
                != nil
        )
        // Not named in stamped_headers, another value, "4242" is not 4242, None never matches.
        #expect(stamps.match(try Self.message(stamps: ["monitoring_id": "m1"], stampedHeaders: [])) == nil)
        #expect(
            stamps.match(try Self.message(stamps: ["monitoring_id": "m2"], stampedHeaders: ["monitoring_id"])) == nil
        )
        #expect(
            stamps.match(try Self.message(stamps: ["monitoring_id": "4242"], stampedHeaders: ["monitoring_id"])) == nil
        )
        #expect(
            stamps.match(try Self.message(stamps: ["monitoring_id": nil], stampedHeaders: ["monitoring_id"])) == nil
        )
        stamps.add(["other": "one"])
        #expect(stamps.match(try Self.message(stamps: ["other": "one"], stampedHeaders: ["other"]))?.header == "other")
    }

    @Test func stampsGoIntoTheMessageHeaders() {
        var task = OutgoingTask(name: "tasks.add")
        #expect(task.messageHeaders["stamped_headers"] == .null)
        task.headers = ["stamped_headers": ["m"], "stamps": ["m": "v"]]
        #expect(task.messageHeaders["stamped_headers"] == ["m"])
        #expect(task.messageHeaders["stamps"] == ["m": "v"])
    }

    @Test func pythonReprOfJSON() {
        #expect(
            PythonText.repr(["a": ["x", 1, 2.5, true, nil], "b": [:]] as JSONValue)
                == "{'a': ['x', 1, 2.5, True, None], 'b': {}}"
        )
    }
}

/// `celery.map`, `celery.starmap` and `celery.chunks` run by an in-process worker against the real redis-server.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct BuiltinTasksTests {
    static func signature(_ name: String) -> JSONValue {
        ["task": .string(name), "args": [], "kwargs": [:], "options": [:], "subtask_type": nil, "immutable": false]
    }

    static func send(_ task: OutgoingTask, _ redis: RedisClient) async throws {
        try await TestRedis.push(redis, task.list, task.envelope())
    }

    @Test func mapAndStarmapRunTheHandlerForEachItem() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let map = OutgoingTask(
                name: "celery.map",
                kwargs: ["task": Self.signature("tasks.identity"), "it": [1, [2], "x"]],
                queue: queue
            )
            let starmap = OutgoingTask(
                name: "celery.starmap",
                kwargs: ["task": Self.signature("tasks.add"), "it": [[1, 1], [2, 2]]],
                queue: queue
            )
            try await Self.send(map, redis)
            try await Self.send(starmap, redis)
            #expect(try await TestRedis.result(redis, map.id)["result"] == [1, [2], "x"])
            #expect(try await TestRedis.result(redis, starmap.id)["result"] == [2, 4])
        }
    }

    @Test func mapFailsAsCeleryForAnUnknownTaskOrBadArguments() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let unknown = OutgoingTask(
                name: "celery.map",
                kwargs: ["task": Self.signature("nope.x"), "it": [1]],
                queue: queue
            )
            let missing = OutgoingTask(
                name: "celery.map",
                kwargs: ["task": Self.signature("tasks.add"), "it": [1]],
                queue: queue
            )
            try await Self.send(unknown, redis)
            try await Self.send(missing, redis)
            let failed = try await TestRedis.result(redis, unknown.id)
            #expect(failed["status"] == "FAILURE")
            #expect(failed["result"]?["exc_type"] == "NotRegistered")
            #expect(failed["result"]?["exc_message"] == ["nope.x"])
            let typeError = try await TestRedis.result(redis, missing.id)
            #expect(typeError["result"]?["exc_type"] == "TypeError")
            #expect(typeError["result"]?["exc_message"] == ["add() missing 1 required positional argument: 'y'"])

            // The built-ins' own argument errors, worded as Celery 5.7's worker words them (captured).
            let calls: [(OutgoingTask, String)] = [
                (
                    OutgoingTask(name: "celery.map", kwargs: ["task": "tasks.add"], queue: queue),
                    "add_map_task.<locals>.xmap() missing 1 required positional argument: 'it'"
                ),
                (
                    OutgoingTask(name: "celery.starmap", kwargs: ["it": []], queue: queue),
                    "add_starmap_task.<locals>.xstarmap() missing 1 required positional argument: 'task'"
                ),
                (
                    OutgoingTask(name: "celery.chunks", kwargs: ["task": "tasks.add", "it": []], queue: queue),
                    "add_chunk_task.<locals>.chunks() missing 1 required positional argument: 'n'"
                ),
                (
                    OutgoingTask(name: "celery.backend_cleanup", args: [1], queue: queue),
                    "add_backend_cleanup_task.<locals>.backend_cleanup() takes 0 positional arguments but 1 was given"
                ),
            ]
            for (task, _) in calls { try await Self.send(task, redis) }
            for (task, message) in calls {
                let meta = try await TestRedis.result(redis, task.id)
                #expect(meta["result"]?["exc_type"] == "TypeError")
                #expect(meta["result"]?["exc_message"] == [.string(message)])
            }
        }
    }

    /// The `celery.chunks` task sends a group of `celery.starmap` tasks and returns the GroupResult tuple, as
    /// Celery's does.
    @Test func chunksTaskSendsAGroupOfStarmaps() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let chunks = OutgoingTask(
                name: "celery.chunks",
                kwargs: ["task": Self.signature("tasks.add"), "it": [[1, 1], [2, 2], [3, 3]], "n": 2],
                queue: queue
            )
            try await Self.send(chunks, redis)
            let meta = try await TestRedis.result(redis, chunks.id)
            #expect(meta["status"] == "SUCCESS")
            let members = try #require(meta["result"]?.arrayValue?.last?.arrayValue)
            #expect(members.count == 2)
            var results: [JSONValue] = []
            for member in members {
                let id = try #require(member[0]?[0]?.stringValue)
                let part = try await TestRedis.result(redis, id)
                #expect(part["parent_id"] == .string(chunks.id))
                results.append(part["result"] ?? nil)
            }
            #expect(results == [[2, 4], [6]])
        }
    }

    /// `chain(add.si(1, 1), add.starmap(...))` and `chain(add.si(1, 1), add.chunks(..., 1))`: the hop is a
    /// `celery.starmap` task, or a group of them.
    @Test func starmapAndChunksAsChainSteps() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let starmapID = OutgoingTask.newID()
            var first = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            first.chain = [
                [
                    "task": "celery.starmap", "args": [],
                    "kwargs": ["task": Self.signature("tasks.add"), "it": [[1, 1], [2, 2]]],
                    "options": ["task_id": .string(starmapID)], "subtask_type": "xstarmap", "immutable": true,
                ]
            ]
            try await Self.send(first, redis)
            #expect(try await TestRedis.result(redis, starmapID)["result"] == [2, 4])

            var second = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            second.chain = [
                [
                    "task": "celery.chunks", "args": [],
                    "kwargs": ["task": Self.signature("tasks.add"), "it": [[1, 1], [2, 2]], "n": 1],
                    "options": [:], "subtask_type": "chunks", "immutable": true,
                ]
            ]
            try await Self.send(second, redis)
            let meta = try await TestRedis.result(redis, second.id)
            let members = try #require(meta["children"]?[0]?[1]?.arrayValue)
            var results: [JSONValue] = []
            for member in members {
                results.append(
                    try await TestRedis.result(redis, try #require(member[0]?[0]?.stringValue))["result"] ?? nil
                )
            }
            #expect(results == [[2], [4]])
        }
    }

    /// A message stamped with a revoked stamp is discarded as REVOKED; others run.
    @Test func revokedStampsDiscardMatchingTasks() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { worker, redis in
            _ = worker.revokeStamps(["monitoring_id": ["m1"]], terminate: false)
            let stamped = TestRedis.envelope(
                task: "tasks.add",
                args: [1, 1],
                queue: queue,
                extraHeaders: ["stamped_headers": ["monitoring_id"], "stamps": ["monitoring_id": "m1"]]
            )
            let other = TestRedis.envelope(
                task: "tasks.add",
                args: [1, 1],
                queue: queue,
                extraHeaders: ["stamped_headers": ["monitoring_id"], "stamps": ["monitoring_id": "m2"]]
            )
            try await TestRedis.push(redis, queue, stamped.bytes)
            try await TestRedis.push(redis, queue, other.bytes)
            let revoked = try await TestRedis.result(redis, stamped.id)
            #expect(revoked["status"] == "REVOKED")
            #expect(revoked["result"]?["exc_type"] == "TaskRevokedError")
            #expect(try await TestRedis.result(redis, other.id)["result"] == 2)

            // A chain's next step the worker sends carries its signature's stamps.
            let hopID = OutgoingTask.newID()
            var first = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            first.chain = [
                [
                    "task": "tasks.identity", "args": ["never"], "kwargs": [:],
                    "options": [
                        "task_id": .string(hopID), "stamped_headers": ["monitoring_id"], "monitoring_id": "m1",
                    ],
                    "subtask_type": nil, "immutable": true,
                ]
            ]
            try await Self.send(first, redis)
            #expect(try await TestRedis.result(redis, hopID)["status"] == "REVOKED")
        }
    }
}
