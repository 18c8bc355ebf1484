import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// How a replacement is shaped (Celery 5.7's `Task.replace`), without Redis.
@Suite struct ReplacementShapeTests {
    static func message(_ configure: (inout OutgoingTask) -> Void = { _ in }) throws -> TaskMessage {
        var task = OutgoingTask(name: "tasks.add_replaced", args: [1, 2], queue: "q")
        task.rootID = "root"
        configure(&task)
        return try TaskMessage(envelope: task.envelope())
    }

    static func add(_ args: [JSONValue], id: String? = nil) -> JSONValue {
        var signature = Signature("tasks.add", args: args)
        if let id { signature.options.taskID = id }
        return signature.json
    }

    @Test func aTaskTakesTheIDAndOneMoreNesting() throws {
        let message = try Self.message { $0.replacedTaskNesting = 2 }
        let steps = try Worker.replacementSteps(Self.add([1, 2]), replacing: message)
        #expect(steps.count == 1)
        #expect(steps[0]["options"]?["task_id"] == .string(message.id))
        #expect(steps[0]["options"]?["replaced_task_nesting"] == 3)
        #expect(steps[0]["options"]?["chord"] == nil)
    }

    @Test func aGroupBecomesAChordWithAccumulateAsBody() throws {
        let message = try Self.message()
        let steps = try Worker.replacementSteps(
            Canvas.group([Self.add([1, 1]), Self.add([2, 2])]),
            replacing: message
        )
        #expect(steps.count == 1)
        #expect(steps[0]["subtask_type"] == "chord")
        let body = try #require(steps[0]["kwargs"]?["body"])
        #expect(body["task"] == "celery.accumulate")
        #expect(body["kwargs"] == ["index": 0])
        #expect(body["options"]?["task_id"] == .string(message.id))
        let header = Worker.signatures(steps[0]["kwargs"]?["header"]?["kwargs"]?["tasks"])
        #expect(header.count == 2)
        #expect(header.allSatisfy { $0["options"]?["replaced_task_nesting"] == 1 })
    }

    @Test func theTasksCanvasIsLinkedOnAndItsChordGroupKept() throws {
        let callback = Signature("tasks.identity").json
        let errback = Signature("tasks.redis_echo", args: ["failed"], immutable: true).json
        let chordBody = Signature("tasks.xsum", options: SendOptions(taskID: "body")).json
        let message = try Self.message {
            $0.callbacks = [callback]
            $0.errbacks = [errback]
            $0.chord = chordBody
            $0.groupID = "the-group"
            $0.groupIndex = 4
        }
        let chainLink = Signature("tasks.redis_echo", args: ["done"], immutable: true).json
        let replacement = Canvas.chain([Self.add([1, 2]), Self.add([3])], options: ["link": [chainLink]])
        let steps = try Worker.replacementSteps(replacement, replacing: message)
        #expect(steps.count == 2)
        // Errbacks on every step; the chain's link and the task's callbacks on the last only.
        #expect(steps[0]["options"]?["link_error"] == [errback])
        #expect(steps[0]["options"]?["link"] == nil)
        #expect(steps[1]["options"]?["link_error"] == [errback])
        #expect(steps[1]["options"]?["link"] == [chainLink, callback])
        // The last step stands for the replaced task: its id, chord, group and index.
        #expect(steps[0]["options"]?["task_id"] == nil)
        #expect(steps[1]["options"]?["task_id"] == .string(message.id))
        #expect(steps[1]["options"]?["chord"] == chordBody)
        #expect(steps[1]["options"]?["group_id"] == "the-group")
        #expect(steps[1]["options"]?["group_index"] == 4)
        #expect(steps[0]["options"]?["chord"] == nil)
    }

    @Test func aChainEndingInAGroupEndsInAChord() throws {
        let message = try Self.message()
        let replacement = Canvas.chain([Self.add([1, 2]), Canvas.group([Self.add([1]), Self.add([1])])])
        let steps = try Worker.replacementSteps(replacement, replacing: message)
        #expect(steps.map { $0["subtask_type"]?.stringValue ?? "" } == ["", "chord"])
        #expect(steps[1]["kwargs"]?["body"]?["options"]?["task_id"] == .string(message.id))
    }

    @Test(arguments: [
        (Canvas.chain([]), "Cannot replace with an empty chain"),
        (
            Canvas.setting(["chord": Signature("tasks.xsum").json], on: Signature("tasks.add").json),
            "A signature replacing a task must not be part of a chord"
        ),
    ])
    func refusedReplacements(signature: JSONValue, reason: String) throws {
        let message = try Self.message()
        let error = #expect(throws: ImproperlyConfigured.self) {
            try Worker.replacementSteps(signature, replacing: message)
        }
        #expect(error?.message == reason)
    }

    @Test func accumulateIsBuiltIn() async throws {
        let registry = TaskRegistry().withBuiltins()
        let task = try #require(registry["celery.accumulate"])
        let context = TaskRegistryTests.context
        #expect(try await task.run(context, TaskArguments(args: [[1, 2], 3], kwargs: ["index": 0])) == [1, 2])
        #expect(try await task.run(context, TaskArguments(args: [1, 2], kwargs: [:])) == [1, 2])
        #expect(try await task.run(context, TaskArguments(args: [1, 2], kwargs: ["index": -1])) == 2)
    }
}

/// `TaskReplace` run by an in-process worker against the real redis-server.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerReplaceTests {
    static func send(_ task: OutgoingTask, _ redis: RedisClient) async throws {
        try await TestRedis.push(redis, task.list, task.envelope())
    }

    static func signature(_ name: String, _ args: [JSONValue] = [], id: String? = nil) -> JSONValue {
        var signature = Signature(name, args: args)
        signature.options.taskID = id
        return signature.json
    }

    @Test func theReplacementsResultIsStoredUnderTheTasksID() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let task = OutgoingTask(name: "tasks.add_replaced", args: [40, 2], queue: queue)
            try await Self.send(task, redis)
            let meta = try await TestRedis.result(redis, task.id)
            #expect(meta["status"] == "SUCCESS")
            #expect(meta["result"] == 42)
            let chained = OutgoingTask(name: "tasks.add_replaced_with_chain", args: [1, 2], queue: queue)
            try await Self.send(chained, redis)
            #expect(try await TestRedis.result(redis, chained.id)["result"] == 3)
        }
    }

    @Test func theChainContinuesAfterAReplacedTask() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let last = OutgoingTask.newID()
            let ids = OutgoingTask.newID()
            // add_replaced(1, 2) | add(10) | ids.si(7)
            var first = OutgoingTask(name: "tasks.add_replaced", args: [1, 2], queue: queue)
            var idsSignature = Signature("tasks.ids", args: [7], immutable: true)
            idsSignature.options.taskID = ids
            first.chain = [idsSignature.json, Self.signature("tasks.add", [10], id: last)]
            try await Self.send(first, redis)
            #expect(try await TestRedis.result(redis, last)["result"] == 13)
            // The hop after the replacement has the replacement (same id as the replaced task) as parent.
            #expect(try await TestRedis.result(redis, last)["parent_id"] == .string(first.id))
            #expect(try await TestRedis.result(redis, ids)["result"] == [.string(first.id), .string(last), 7])
        }
    }

    @Test func aGroupReplacementGivesTheListOfResults() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 4)) { _, redis in
            let task = OutgoingTask(name: "tasks.add_to_all", args: [[1, 2, 3], 10], queue: queue)
            try await Self.send(task, redis)
            #expect(try await TestRedis.result(redis, task.id)["result"] == [11, 12, 13])
            let empty = OutgoingTask(name: "tasks.add_to_all", args: [[], 10], queue: queue)
            try await Self.send(empty, redis)
            #expect(try await TestRedis.result(redis, empty.id)["result"] == [])
            let mixed = OutgoingTask(name: "tasks.replace_with_chain_which_contains_a_group", queue: queue)
            try await Self.send(mixed, redis)
            #expect(try await TestRedis.result(redis, mixed.id)["result"] == [4, 4])
        }
    }

    @Test func aReplacedChordPartCountsForTheChord() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 4)) { _, redis in
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            let callback = WorkerChordTests.callback("tasks.echo", id: callbackID, groupID: groupID)
            // chord([add(1, 1), add_replaced(2, 2), add_to_all([1, 2], 5)], echo())
            let header = [
                OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue),
                OutgoingTask(name: "tasks.add_replaced", args: [2, 2], queue: queue),
                OutgoingTask(name: "tasks.add_to_all", args: [[1, 2], 5], queue: queue),
            ]
            try await WorkerChordTests.sendChord(header, callback: callback, groupID: groupID, redis: redis)
            let meta = try await TestRedis.result(redis, callbackID)
            #expect(meta["result"] == ["args": [[2, 4, [6, 7]]], "kwargs": [:]])
            #expect(try await TestRedis.result(redis, header[1].id)["group_id"] == .string(groupID))
        }
    }

    @Test func callbacksAndErrbacksAreCarriedOver() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let callback = OutgoingTask.newID()
            var task = OutgoingTask(name: "tasks.add_replaced", args: [2, 3], queue: queue)
            task.callbacks = [Self.signature("tasks.mul", [10], id: callback)]
            try await Self.send(task, redis)
            let called = try await TestRedis.result(redis, callback)
            #expect(called["result"] == 50)
            #expect(called["parent_id"] == .string(task.id))

            let errback = OutgoingTask.newID()
            var failing = OutgoingTask(name: "tasks.fail_replaced", args: ["boom"], queue: queue)
            failing.errbacks = [Self.signature("tasks.identity", id: errback)]
            try await Self.send(failing, redis)
            let meta = try await TestRedis.result(redis, failing.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "ValueError")
            #expect(try await TestRedis.result(redis, errback)["result"] == .string(failing.id))
        }
    }

    @Test func nestingAndIDsFollowTheReplacements() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let nesting = OutgoingTask(name: "tasks.record_replaced_task_nesting", args: [3], queue: queue)
            try await Self.send(nesting, redis)
            #expect(try await TestRedis.result(redis, nesting.id)["result"] == [0, 1, 2, 3])

            let key = "replace-echo-\(queue)"
            let second = OutgoingTask(name: "tasks.second_order_replace1", args: [.string(key)], queue: queue)
            try await Self.send(second, redis)
            _ = try await TestRedis.result(redis, second.id)
            let texts = try await redis.send(RESPCommand("LRANGE", key, 0, -1)).array?.compactMap(\.string) ?? []
            #expect(texts == ["In A", "In B", "In/Out C", "Out B", "Out A"])
            try await redis.send(RESPCommand("DEL", key))
        }
    }

    @Test func anEmptyChainFailsTheTask() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let last = OutgoingTask.newID()
            var task = OutgoingTask(name: "tasks.replace_with_empty_chain", queue: queue)
            task.chain = [Self.signature("tasks.identity", id: last)]
            try await Self.send(task, redis)
            let meta = try await TestRedis.result(redis, task.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "ImproperlyConfigured")
            #expect(meta["result"]?["exc_message"] == ["Cannot replace with an empty chain"])
            #expect(try await TestRedis.result(redis, last)["status"] == "FAILURE")
        }
    }

    @Test func handlersReadTheirRequest() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            var limited = OutgoingTask(name: "tasks.return_request_time_limits", queue: queue)
            limited.hardTimeLimit = 30
            limited.softTimeLimit = 20
            try await Self.send(limited, redis)
            #expect(
                try await TestRedis.result(redis, limited.id)["result"] == ["time_limit": 30, "soft_time_limit": 20]
            )
            let plain = OutgoingTask(name: "tasks.return_request_time_limits", queue: queue)
            try await Self.send(plain, redis)
            #expect(
                try await TestRedis.result(redis, plain.id)["result"] == ["time_limit": nil, "soft_time_limit": nil]
            )
            var properties = OutgoingTask(name: "tasks.return_properties", queue: queue, priority: 3)
            properties.replyTo = "the-oid"
            try await Self.send(properties, redis)
            let returned = try await TestRedis.result(redis, properties.id)["result"]
            #expect(returned?["correlation_id"] == .string(properties.id))
            #expect(returned?["reply_to"] == "the-oid")
            #expect(returned?["priority"] == 3)
        }
    }
}
