import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Link callbacks, chains and errbacks run by an in-process worker against the real redis-server.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerCanvasTests {
    /// A signature as Celery serializes `tasks.<name>.s(*args)` (or `.si` when immutable).
    static func signature(
        _ name: String,
        _ args: [JSONValue] = [],
        id: String? = nil,
        immutable: Bool = false
    ) -> JSONValue {
        var options: JSONObject = [:]
        if let id { options["task_id"] = .string(id) }
        return [
            "task": .string(name), "args": .array(args), "kwargs": [:], "options": .object(options),
            "subtask_type": nil, "immutable": .bool(immutable),
        ]
    }

    static func children(_ ids: String...) -> JSONValue {
        .array(ids.map { [[.string($0), nil], nil] })
    }

    static func send(_ task: OutgoingTask, _ redis: RedisClient) async throws {
        try await TestRedis.push(redis, task.list, task.envelope())
    }

    @Test func linkCallbackGetsTheResultPrepended() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let childID = OutgoingTask.newID()
            var parent = OutgoingTask(name: "tasks.add", args: [2, 3], queue: queue)
            parent.callbacks = [Self.signature("tasks.add", [10], id: childID)]
            try await Self.send(parent, redis)
            let child = try await TestRedis.result(redis, childID)
            #expect(child["status"] == "SUCCESS")
            #expect(child["result"] == 15)
            #expect(child["parent_id"] == .string(parent.id))
            let meta = try await TestRedis.result(redis, parent.id)
            #expect(meta["result"] == 5)
            #expect(meta["children"] == Self.children(childID))
        }
    }

    @Test func immutableCallbackKeepsItsArguments() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let childID = OutgoingTask.newID()
            var parent = OutgoingTask(name: "tasks.add", args: [2, 3], queue: queue)
            parent.callbacks = [Self.signature("tasks.echo", ["x"], id: childID, immutable: true)]
            try await Self.send(parent, redis)
            let child = try await TestRedis.result(redis, childID)
            #expect(child["result"] == ["args": ["x"], "kwargs": [:]])
        }
    }

    @Test func threeHopChainRecordsParentsAndChildren() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let second = OutgoingTask.newID()
            let third = OutgoingTask.newID()
            // add(1, 2) | add(3) | mul(10): the rest of the chain is stored reversed, next hop last.
            var first = OutgoingTask(name: "tasks.add", args: [1, 2], queue: queue)
            first.chain = [Self.signature("tasks.mul", [10], id: third), Self.signature("tasks.add", [3], id: second)]
            try await Self.send(first, redis)
            let last = try await TestRedis.result(redis, third)
            #expect(last["status"] == "SUCCESS")
            #expect(last["result"] == 60)
            #expect(last["parent_id"] == .string(second))
            #expect(last["children"] == [])
            let middle = try await TestRedis.result(redis, second)
            #expect(middle["result"] == 6)
            #expect(middle["parent_id"] == .string(first.id))
            #expect(middle["children"] == Self.children(third))
            let head = try await TestRedis.result(redis, first.id)
            #expect(head["result"] == 3)
            #expect(head["children"] == Self.children(second))
        }
    }

    @Test func chainHopsKeepTheRootAndTheQueue() async throws {
        let queue = TestRedis.uniqueQueue()
        // No worker: run one hop by hand and look at what was published.
        let redis = try TestRedis.client()
        let worker = Worker(
            configuration: WorkerConfiguration(queues: [queue], hostname: "swift@canvas"),
            registry: TestRedis.defaultRegistry(),
            broker: redis,
            backend: redis,
            logger: TestRedis.logger
        )
        var first = OutgoingTask(name: "tasks.add", args: [1, 2], queue: queue)
        first.rootID = "the-root"
        first.chain = [Self.signature("tasks.mul", [10]), Self.signature("tasks.add", [3])]
        let message = try TaskMessage(envelope: first.envelope())
        let children = try await worker.publishSuccessors(of: message, result: 3)
        let reply = try await redis.send(RESPCommand("RPOP", queue))
        let hop = try TaskMessage(envelope: Array(try #require(reply.bytes).readableBytesView))
        #expect(children == Self.children(hop.id))
        #expect(hop.taskName == "tasks.add")
        #expect(hop.args == [3, 3])
        #expect(hop.parentID == first.id)
        #expect(hop.rootID == "the-root")
        #expect(hop.routingKey == queue)
        #expect(hop.headers["origin"] == "swift@canvas")
        #expect(hop.embed["chain"] == [Self.signature("tasks.mul", [10])])
    }

    @Test func aChainInsideAGroupRunsAsOneMemberWhoseLastTaskGivesTheResult() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // add(1, 2) | group(add(10) | mul(2), add(100)): the group member chain gets 3 and gives 26.
            let lastID = OutgoingTask.newID()
            let member = Canvas.chain([Self.signature("tasks.add", [10]), Self.signature("tasks.mul", [2], id: lastID)])
            let groupSignature = Canvas.group([member, Self.signature("tasks.add", [100])])
            var first = OutgoingTask(name: "tasks.add", args: [1, 2], queue: queue)
            first.chain = [groupSignature]
            try await Self.send(first, redis)
            let last = try await TestRedis.result(redis, lastID)
            #expect(last["status"] == "SUCCESS")
            #expect(last["result"] == 26)
            // The first task's children name the group, with the chain's last task as the member's result.
            let meta = try await TestRedis.result(redis, first.id)
            #expect(meta["children"]?[0]?[1]?[0]?[0]?[0] == .string(lastID))
        }
    }

    @Test func aGroupFollowedByMoreStepsBecomesAChordWithTheNextStepAsBody() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // add(1, 1) | group(add(1), add(2)) | xsum() | add(100): on the wire the rest is reversed.
            let lastID = OutgoingTask.newID()
            let groupSignature = Canvas.group([Self.signature("tasks.add", [1]), Self.signature("tasks.add", [2])])
            var first = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            first.chain = [
                Self.signature("tasks.add", [100], id: lastID), Self.signature("tasks.xsum"), groupSignature,
            ]
            try await Self.send(first, redis)
            let last = try await TestRedis.result(redis, lastID)
            #expect(last["status"] == "SUCCESS")
            #expect(last["result"] == 107)
        }
    }

    @Test func aChainsOwnLinkErrorGoesOnEveryStep() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // add(1, 1) | chain(identity(), fail.si("boom")).on_error(identity()): the failing step calls it.
            let failingID = OutgoingTask.newID()
            let errbackID = OutgoingTask.newID()
            let inner = Canvas.chain(
                [
                    Self.signature("tasks.identity"),
                    Self.signature("tasks.fail", ["boom"], id: failingID, immutable: true),
                ],
                options: ["link_error": [Self.signature("tasks.identity", id: errbackID)]]
            )
            var first = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            first.chain = [inner]
            try await Self.send(first, redis)
            let errback = try await TestRedis.result(redis, errbackID)
            #expect(errback["result"] == .string(failingID))
        }
    }

    @Test func aChordsOwnLinkGoesOnItsBody() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // add(1, 1) | chord([add(10), add(20)], xsum()) with link=identity(): the link gets the body's 34.
            let linkID = OutgoingTask.newID()
            let chord = Canvas.chord(
                [Self.signature("tasks.add", [10]), Self.signature("tasks.add", [20])],
                body: Self.signature("tasks.xsum"),
                options: ["link": [Self.signature("tasks.identity", id: linkID)]]
            )
            var first = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            first.chain = [chord]
            try await Self.send(first, redis)
            #expect(try await TestRedis.result(redis, linkID)["result"] == 34)
        }
    }

    @Test func errbackGetsTheFailedTaskID() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let errback = OutgoingTask.newID()
            let immutable = OutgoingTask.newID()
            var failing = OutgoingTask(name: "tasks.fail", args: ["boom"], queue: queue)
            failing.errbacks = [
                Self.signature("tasks.identity", id: errback),
                Self.signature("tasks.identity", ["x"], id: immutable, immutable: true),
            ]
            try await Self.send(failing, redis)
            let meta = try await TestRedis.result(redis, failing.id)
            #expect(meta["status"] == "FAILURE")
            let called = try await TestRedis.result(redis, errback)
            #expect(called["result"] == .string(failing.id))
            #expect(called["parent_id"] == .string(failing.id))
            #expect(try await TestRedis.result(redis, immutable)["result"] == "x")
        }
    }

    @Test func failureFailsTheChainAndSkipsCallbacks() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 1)) { _, redis in
            let hop = OutgoingTask.newID()
            let callback = OutgoingTask.newID()
            var failing = OutgoingTask(name: "tasks.fail", args: ["stop"], queue: queue)
            failing.chain = [Self.signature("tasks.add", [1], id: hop)]
            failing.callbacks = [Self.signature("tasks.identity", id: callback)]
            try await Self.send(failing, redis)
            let after = OutgoingTask(name: "tasks.add", args: [0, 0], queue: queue)
            try await Self.send(after, redis)
            let meta = try await TestRedis.result(redis, failing.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["children"] == [])
            _ = try await TestRedis.result(redis, after.id)
            try await Task.sleep(for: .milliseconds(200))
            // The rest of the chain is not run, but stored with the same failure (Celery's _fail_chain).
            #expect(try await TestRedis.result(redis, hop)["result"]?["exc_message"] == ["stop"])
            #expect(try await redis.send(RESPCommand("EXISTS", "celery-task-meta-\(callback)")).int == 0)
            #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 0)
        }
    }
}
