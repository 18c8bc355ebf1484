import Foundation
import JSON
import NIOCore
import RESP
import Redis
import Synchronization
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The crash guard's Redis side: marks, the restore that counts crashes and claims, and the ack that clears both.
/// Every test records in `unacked` keys of its own (see WorkerVisibilityTests).
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct CrashGuardRedisTests {
    static func layout(_ queue: String, maximumCrashes: Int) -> KombuLayout {
        var layout = KombuLayout()
        layout.unackedKey = "\(queue):unacked"
        layout.unackedIndexKey = "\(queue):unacked_index"
        layout.unackedMutexKey = "\(queue):unacked_mutex"
        layout.runningKey = "\(queue):running"
        layout.crashCountKey = "\(queue):crashes"
        layout.maximumCrashes = maximumCrashes
        return layout
    }

    /// What a worker killed while running (or holding) a message leaves: the message in `unacked` under an old
    /// score, and its running mark when its handler had started.
    static func orphan(
        _ redis: RedisClient,
        _ layout: KombuLayout,
        queue: String,
        running: Bool,
        errbacks: JSONValue = nil
    ) async throws -> (id: String, tag: String, bytes: [UInt8]) {
        let message = TestRedis.envelope(task: "tasks.add", args: [40, 2], queue: queue)
        var value = ByteBuffer(string: "[")
        value.writeBytes(message.bytes)
        value.writeString(", \"\", \"\(queue)\"]")
        var commands = [
            RESPCommand("HSET", layout.unackedKey, message.tag, value),
            RESPCommand("ZADD", layout.unackedIndexKey, CeleryTimestamp.now().secondsSince1970 - 100, message.tag),
        ]
        if running { commands.append(RESPCommand("HSET", layout.runningKey, message.tag, "dead@host")) }
        _ = try await redis.transaction(commands)
        return message
    }

    static func cleanUp(_ redis: RedisClient, _ layout: KombuLayout, queue: String) async throws {
        try await redis.send(
            RESPCommand(
                "DEL",
                layout.unackedKey,
                layout.unackedIndexKey,
                layout.runningKey,
                layout.crashCountKey,
                queue
            )
        )
    }

    @Test func aRunningMessageIsCountedAndRestoredUntilItsCrashesReachTheLimit() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let layout = Self.layout(queue, maximumCrashes: 3)
        let broker = KombuBroker(client: redis, layout: layout, logger: TestRedis.logger)
        let cutoff = { CeleryTimestamp.now().secondsSince1970 - 10 }
        let poison = try await Self.orphan(redis, layout, queue: queue, running: true)
        // Fetched ahead and never started: no mark, so never counted.
        let prefetched = try await Self.orphan(redis, layout, queue: queue, running: false)

        var report = try await broker.restoreExpired(olderThan: cutoff(), holding: [])
        #expect(report.restored == 2 && report.claimed.isEmpty)
        #expect(try await redis.send(RESPCommand("HGET", layout.crashCountKey, poison.tag)).string == "1")
        #expect(try await redis.send(RESPCommand("HEXISTS", layout.crashCountKey, prefetched.tag)).int == 0)
        #expect(try await redis.send(RESPCommand("HLEN", layout.runningKey)).int == 0)
        #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 2)
        #expect(try await redis.send(RESPCommand("TTL", layout.crashCountKey)).int ?? 0 > 0)

        // Two more deaths while it runs: the second is the third crash, and the message is claimed, not restored.
        for crash in 2...3 {
            try await redis.send(RESPCommand("DEL", queue))
            _ = try await Self.orphan(redis, layout, queue: queue, running: false)
            _ = try await redis.transaction([
                RESPCommand(
                    "HSET",
                    layout.unackedKey,
                    poison.tag,
                    "[\(String(decoding: poison.bytes, as: UTF8.self)), \"\", \"\(queue)\"]"
                ),
                RESPCommand("ZADD", layout.unackedIndexKey, CeleryTimestamp.now().secondsSince1970 - 100, poison.tag),
                RESPCommand("HSET", layout.runningKey, poison.tag, "dead@host"),
            ])
            report = try await broker.restoreExpired(olderThan: cutoff(), holding: [])
            #expect(report.restored == (crash == 3 ? 1 : 2))
            #expect(report.claimed.map(\.delivery.tag) == (crash == 3 ? [poison.tag] : []))
        }
        let claimed = try #require(report.claimed.first)
        #expect(claimed.crashes == 3)
        #expect(claimed.delivery.list == queue)
        #expect(try TaskMessage(envelope: claimed.delivery.envelope).id == poison.id)
        // Still in unacked, under a fresh score: no other restore takes it while the claimer fails it.
        #expect(try await TestRedis.inUnacked(redis, poison.tag, key: layout.unackedKey))
        let score = try #require(try await redis.send(RESPCommand("ZSCORE", layout.unackedIndexKey, poison.tag)).double)
        #expect(score > cutoff())
        let queued = try await redis.send(RESPCommand("LRANGE", queue, 0, -1)).array?.compactMap(\.string) ?? []
        #expect(!queued.contains { $0.contains(poison.id) })
        try await Self.cleanUp(redis, layout, queue: queue)
    }

    @Test func withTheGuardOffMarkedMessagesAreRestoredUncounted() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let layout = Self.layout(queue, maximumCrashes: 0)
        let broker = KombuBroker(client: redis, layout: layout, logger: TestRedis.logger)
        _ = try await Self.orphan(redis, layout, queue: queue, running: true)
        let report = try await broker.restoreExpired(
            olderThan: CeleryTimestamp.now().secondsSince1970 - 10,
            holding: []
        )
        #expect(report.restored == 1 && report.claimed.isEmpty)
        #expect(try await redis.send(RESPCommand("EXISTS", layout.crashCountKey)).int == 0)
        try await Self.cleanUp(redis, layout, queue: queue)
    }

    @Test func marksAreWrittenAndAGracefulRestoreRemovesThem() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let layout = Self.layout(queue, maximumCrashes: 3)
        let broker = KombuBroker(client: redis, layout: layout, logger: TestRedis.logger)
        let message = TestRedis.envelope(task: "tasks.add", args: [1, 2], queue: queue)
        try await TestRedis.push(redis, queue, message.bytes)
        let delivery = try #require(try await broker.pop(lists: [queue], limit: 1).first)
        #expect(try await redis.send(RESPCommand("HEXISTS", layout.runningKey, message.tag)).int == 0)
        try await broker.markRunning([message.tag, "other"], worker: "me@host")
        #expect(try await redis.send(RESPCommand("HGET", layout.runningKey, message.tag)).string == "me@host")
        // A cold shutdown gives an interrupted task back: not a crash.
        #expect(try await broker.restore(delivery, deliveryTag: message.tag))
        #expect(try await redis.send(RESPCommand("HEXISTS", layout.runningKey, message.tag)).int == 0)
        #expect(try await redis.send(RESPCommand("HEXISTS", layout.runningKey, "other")).int == 1)
        try await Self.cleanUp(redis, layout, queue: queue)
    }

    @Test(arguments: [true, false])
    func theAckClearsTheMarkAndTheCount(withResults: Bool) async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let layout = Self.layout(queue, maximumCrashes: 3)
        let message = try await Self.orphan(redis, layout, queue: queue, running: true)
        try await redis.send(RESPCommand("HSET", layout.crashCountKey, message.tag, 2))
        let batcher = WriteBatcher(
            backend: redis,
            broker: redis,
            layout: layout,
            resultTTL: 60,
            clearsRunningMarks: true,
            logger: TestRedis.logger
        )
        // With a result the ack rides in the result script; alone it is a pipeline.
        if withResults { batcher.storeResult(taskID: message.id, meta: ["status": "SUCCESS", "result": 42]) }
        batcher.ack(deliveryTag: message.tag)
        batcher.close()
        await batcher.run()
        #expect(try await !TestRedis.inUnacked(redis, message.tag, key: layout.unackedKey))
        #expect(try await redis.send(RESPCommand("HEXISTS", layout.runningKey, message.tag)).int == 0)
        #expect(try await redis.send(RESPCommand("HEXISTS", layout.crashCountKey, message.tag)).int == 0)
        try await redis.send(RESPCommand("DEL", "celery-task-meta-\(message.id)"))
        try await Self.cleanUp(redis, layout, queue: queue)
    }

    @Test func aWorkerFailsAMessageThatCrashedItsWorkersWithWorkerLostError() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let counter = "test:errbacks:\(queue)"
        var registry = TestRedis.defaultRegistry()
        registry.register("test.count", parameters: ["failed"]) { (context: TaskContext, _: String) in
            try await context.redis.send(RESPCommand("INCR", counter)).int ?? 0
        }
        var configuration = WorkerConfiguration(queues: [queue], acksLate: true, visibilityTimeout: .seconds(2))
        configuration.unackedKey = "\(queue):unacked"
        configuration.unackedIndexKey = "\(queue):unacked_index"
        configuration.unackedMutexKey = "\(queue):unacked_mutex"
        configuration.runningKey = "\(queue):running"
        configuration.crashCountKey = "\(queue):crashes"
        configuration.maximumCrashes = 2
        let layout = Self.layout(queue, maximumCrashes: 2)
        // Its second crash: the first is counted already.
        let errback: JSONValue = [
            "task": "test.count", "args": [], "kwargs": [:], "options": ["task_id": .string(UUID().uuidString)],
            "subtask_type": nil, "immutable": false,
        ]
        let poison = TestRedis.envelope(task: "tasks.add", args: [40, 2], queue: queue)
        guard case .object(var withErrback) = try JSONValue(parsing: poison.bytes) else {
            Issue.record("the envelope is not an object")
            return
        }
        let body: JSONValue = [[40, 2], [:], ["callbacks": nil, "errbacks": [errback], "chain": nil, "chord": nil]]
        withErrback["body"] = .string(Data(body.serialized()).base64EncodedString())
        let envelope = JSONValue.object(withErrback).serialized()
        var value = ByteBuffer(string: "[")
        value.writeBytes(envelope)
        value.writeString(", \"\", \"\(queue)\"]")
        _ = try await redis.transaction([
            RESPCommand("HSET", layout.unackedKey, poison.tag, value),
            RESPCommand("ZADD", layout.unackedIndexKey, CeleryTimestamp.now().secondsSince1970 - 100, poison.tag),
            RESPCommand("HSET", layout.runningKey, poison.tag, "dead@host"),
            RESPCommand("HSET", layout.crashCountKey, poison.tag, 1),
        ])
        try await TestRedis.withWorker(configuration, registry: registry) { _, redis in
            let meta = try await TestRedis.result(redis, poison.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "WorkerLostError")
            #expect(meta["result"]?["exc_module"] == "billiard.exceptions")
            #expect(try await TestRedis.eventuallyAcked(redis, poison.tag, key: configuration.unackedKey))
            for _ in 0..<250 where try await redis.send(RESPCommand("GET", counter)).string == nil {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(try await redis.send(RESPCommand("GET", counter)).string == "1", "the errback ran")
            let dead = try await redis.send(RESPCommand("LRANGE", "swift-celery:dead-letter", 0, 99))
            #expect(dead.array?.contains { $0.string?.contains(poison.id) == true } == true)
            #expect(try await redis.send(RESPCommand("HEXISTS", layout.crashCountKey, poison.tag)).int == 0)
            #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 0, "not delivered again")
        }
        try await redis.send(RESPCommand("DEL", counter, "celery-task-meta-\(poison.id)"))
        try await Self.cleanUp(redis, layout, queue: queue)
    }
}

/// The worker's side in memory: what it marks, and when.
@Suite("Crash guard marks, in memory")
struct CrashGuardMarkTests {
    /// The broker a handler looks at, set once the worker is made.
    final class BrokerBox: Sendable {
        let broker = Mutex<InMemoryBroker?>(nil)
    }

    /// A handler that answers whether its own message was marked as running when it started.
    static func registry(_ box: BrokerBox) -> TaskRegistry {
        var registry = TaskRegistry()
        registry.register("t.marked", parameters: []) { (context: TaskContext) in
            let tags = box.broker.withLock { $0?.runningTags } ?? []
            return tags.contains("tag-\(context.id)")
        }
        return registry
    }

    @Test(arguments: [(true, 3, true), (false, 3, false), (true, 0, false)])
    func onlyAcksLateHandlersAreMarkedBeforeTheyStart(acksLate: Bool, maximumCrashes: Int, marked: Bool) async throws {
        let box = BrokerBox()
        var configuration = WorkerConfiguration(
            queues: ["q"],
            concurrency: 1,
            hostname: "memory@test",
            acksLate: acksLate
        )
        configuration.maximumCrashes = maximumCrashes
        let memory = try InMemoryWorker(registry: Self.registry(box), configuration: configuration)
        box.broker.withLock { $0 = memory.broker }
        await memory.worker.execute(try InMemoryWorker.message("t.marked", id: "m"))
        #expect(memory.log.meta("m")?["result"] == JSONValue.bool(marked))
        // The ack takes the mark away.
        #expect(memory.broker.runningTags.isEmpty)
    }

    /// Names in the order something happened to them, from several tasks.
    final class Names: Sendable {
        private let names = Mutex<[String]>([])
        var all: [String] { names.withLock { $0 } }
        func append(_ name: String) { names.withLock { $0.append(name) } }
    }

    @Test func marksOfTasksStartingTogetherShareWrites() async throws {
        let broker = InMemoryBroker()
        broker.markDelay = .milliseconds(5)
        let marks = RunningMarks(broker: broker, worker: "memory@test", logger: InMemoryWorker.quietLogger)
        let tags = (0..<100).map { "tag-\($0)" }
        let unmarked = Names()
        await withTaskGroup { group in
            for tag in tags {
                group.addTask {
                    await marks.mark(tag)
                    // Returned only once its own tag is written.
                    if !broker.runningTags.contains(tag) { unmarked.append(tag) }
                }
            }
        }
        #expect(unmarked.all.isEmpty)
        #expect(broker.runningTags == Set(tags))
        #expect(broker.markWrites < 50, "\(broker.markWrites) writes for 100 marks")
    }

    @Test func aSuspectWaitsForTheRunningHandlersAndRunsAlone() async throws {
        let gate = SuspectGate()
        let started = Names()
        @Sendable func enter(_ name: String, alone: Bool) async {
            await gate.enter(alone: alone)
            started.append(name)
        }
        func waitFor(waiting: Int, started count: Int) async throws {
            for _ in 0..<500 where gate.waiting != waiting || started.all.count != count {
                try await Task.sleep(for: .milliseconds(2))
            }
            try #require(gate.waiting == waiting && started.all.count == count)
        }
        await enter("running", alone: false)
        try await withThrowingTaskGroup { group in
            group.addTask { await enter("suspect", alone: true) }
            try await waitFor(waiting: 1, started: 1)
            // Behind a waiting suspect, a handler that could start at once waits too.
            group.addTask { await enter("later", alone: false) }
            try await waitFor(waiting: 2, started: 1)
            gate.leave()
            try await waitFor(waiting: 1, started: 2)
            #expect(started.all == ["running", "suspect"])
            gate.leave()
            try await waitFor(waiting: 0, started: 3)
            #expect(started.all == ["running", "suspect", "later"])
            gate.leave()
        }
        // Without suspects nobody waits.
        await enter("a", alone: false)
        await enter("b", alone: false)
        #expect(gate.waiting == 0 && started.all.count == 5)
    }

    @Test(arguments: [(0.2, 1000), (1.0, 1000), (42.5, 42_500), (3600.0, 300_000)])
    func theRestoreMutexLivesNoLongerThanTheVisibilityTimeout(seconds: Double, milliseconds: Int) throws {
        let client = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:1/0"),
            logger: InMemoryWorker.quietLogger
        )
        let worker = Worker(
            configuration: WorkerConfiguration(visibilityTimeout: .milliseconds(Int64(seconds * 1000))),
            registry: TaskRegistry(),
            broker: client,
            backend: client,
            logger: InMemoryWorker.quietLogger
        )
        let broker = try #require(worker.broker as? KombuBroker)
        #expect(broker.layout.unackedMutexExpiry == milliseconds)
    }

    @Test func aClaimedMessageIsFailedWithWorkerLostErrorDeadLetteredAndAcked() async throws {
        var registry = TaskRegistry()
        registry.register("t.add", parameters: ["x", "y"]) { (_, x: Int, y: Int) in x + y }
        let memory = try InMemoryWorker(registry: registry, acksLate: true)
        let envelope = InMemoryWorker.envelope(
            "t.add",
            id: "poison",
            args: [1, 2],
            errbacks: [InMemoryWorker.signature("t.add", id: "on-error", args: [0])]
        )
        let delivery = Delivery(list: "q", envelope: envelope, tag: "tag-poison")
        await memory.worker.failCrashed(CrashedDelivery(delivery: delivery, crashes: 3))
        #expect(memory.log.all == [.published(["t.add"]), .result("poison", status: "FAILURE"), .ack("tag-poison")])
        let result = try #require(memory.log.meta("poison")?["result"])
        #expect(result["exc_type"] == "WorkerLostError" && result["exc_module"] == "billiard.exceptions")
        #expect(memory.broker.deadLetters == [envelope])
        #expect(memory.worker.holdingTags.isEmpty)
    }
}
