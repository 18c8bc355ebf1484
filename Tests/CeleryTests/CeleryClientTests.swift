import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The Swift client: messages as `apply_async` builds them (pure), and results against the real redis-server with
/// an in-process worker.
struct CeleryClientMessageTests {
    static func client() throws -> CeleryClient {
        let redis = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:1/0"),
            logger: TestRedis.logger
        )
        return CeleryClient(broker: redis, backend: redis, defaultQueue: "jobs", origin: "swift-client@test")
    }

    @Test func optionsReachTheWire() throws {
        let client = try Self.client()
        let before = CeleryTimestamp.now().secondsSince1970
        let signature = Signature(
            "tasks.add",
            args: [2, 3],
            kwargs: ["z": true],
            options: SendOptions(
                taskID: "fixed-id",
                queue: "q2",
                priority: 7,
                countdown: .seconds(10),
                expires: .after(.seconds(60)),
                headers: ["x-custom": "v"],
                timeLimit: 30,
                softTimeLimit: 20,
                link: [Signature("tasks.identity")],
                linkError: [Signature("tasks.identity", args: ["e"]).asImmutable()]
            )
        )
        let task = try client.message(for: signature)
        let message = try TaskMessage(envelope: task.envelope())
        #expect(message.id == "fixed-id")
        #expect(message.taskName == "tasks.add")
        #expect(message.args == [2, 3])
        #expect(message.kwargs == ["z": true])
        #expect(task.list == "q2\u{06}\u{16}6")
        #expect(message.routingKey == "q2")
        #expect(message.priority == 7)
        let eta = try #require(message.eta).secondsSince1970
        #expect(eta >= before + 10 && eta < before + 12)
        let expires = try #require(message.expires).secondsSince1970
        #expect(expires >= before + 60 && expires < before + 62)
        #expect(message.headers["x-custom"] == "v")
        #expect(message.headers["origin"] == "swift-client@test")
        #expect(message.headers["timelimit"] == [30, 20])
        #expect(message.rootID == "fixed-id")
        #expect(message.embed["callbacks"]?[0]?["task"] == "tasks.identity")
        #expect(message.embed["errbacks"]?[0]?["immutable"] == true)
        #expect(message.embed["errbacks"]?[0]?["args"] == ["e"])
        let envelope = try JSONValue(parsing: task.envelope())
        #expect(envelope["properties"]?["reply_to"] == .string(client.oid))
        #expect(envelope["properties"]?["expiration"]?.stringValue.flatMap { Int($0) }.map { $0 > 59_000 } == true)
    }

    @Test func defaultsAreTheClientsQueueAndAFreshID() throws {
        let client = try Self.client()
        let one = try client.message(for: Signature("tasks.echo"))
        let two = try client.message(for: Signature("tasks.echo"))
        #expect(one.queue == "jobs")
        #expect(one.id != two.id)
        #expect(one.eta == nil && one.expires == nil)
    }

    @Test func badRequestsAreRefused() throws {
        let client = try Self.client()
        #expect(throws: CeleryClientError.self) { try client.message(for: Signature("")) }
        #expect(throws: CeleryClientError.self) {
            try client.message(for: Signature("tasks.add", options: SendOptions(priority: -1)))
        }
    }
}

@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct CeleryClientTests {
    static func client(_ redis: RedisClient, queue: String) -> CeleryClient {
        CeleryClient(broker: redis, backend: redis, defaultQueue: queue)
    }

    @Test func sendAndGet() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 4)) { _, redis in
            let client = Self.client(redis, queue: queue)
            let result = try await client.send("tasks.add", args: [2, 3])
            #expect(try await result.get(timeout: .seconds(10)) == 5)
            #expect(try await result.state() == "SUCCESS")
            #expect(try await result.ready())
            let echo = try await client.send("tasks.echo", args: ["a"], kwargs: ["k": 1])
            #expect(try await echo.get() == ["args": ["a"], "kwargs": ["k": 1]])
            try await result.forget()
            #expect(try await result.state() == "PENDING")
        }
    }

    @Test func failureIsThrownAsTaskFailure() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let result = try await Self.client(redis, queue: queue).send("tasks.fail", args: ["boom"])
            do {
                _ = try await result.get()
                Issue.record("a failed task must throw")
            } catch let failure as TaskFailure {
                #expect(failure.taskID == result.id)
                #expect(failure.state == .failure)
                #expect(failure.exceptionType == "ValueError")
                #expect(failure.exceptionModule == "builtins")
                #expect(failure.arguments == ["boom"])
                #expect(failure.description == "ValueError('boom')")
            }
        }
    }

    @Test func getTimesOutWhenNoWorkerAnswers() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let result = try await Self.client(redis, queue: queue).send("tasks.add", args: [1, 1])
        #expect(try await result.state() == "PENDING")
        let started = ContinuousClock.now
        do {
            _ = try await result.get(timeout: .milliseconds(300))
            Issue.record("nothing consumes the queue, so get() must time out")
        } catch let error as CeleryClientError {
            #expect(error.code == .timeout)
        }
        #expect(ContinuousClock.now - started >= .milliseconds(300))
        try await redis.send(RESPCommand("DEL", queue))
    }

    @Test func resultPublishedWhileWaitingWakesGet() async throws {
        let redis = try TestRedis.client()
        let id = OutgoingTask.newID()
        let result = AsyncResult(id: id, backend: redis)
        async let value = result.get(timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(200))
        let meta = #"{"status": "SUCCESS", "result": [1, "x"], "traceback": null, "children": [], "task_id": "\#(id)"}"#
        _ = try await redis.transaction([
            RESPCommand("SETEX", "celery-task-meta-\(id)", 60, meta),
            RESPCommand("PUBLISH", "celery-task-meta-\(id)", meta),
        ])
        #expect(try await value == [1, "x"])
    }

    @Test func malformedStoredResultIsAClearError() async throws {
        let redis = try TestRedis.client()
        let id = OutgoingTask.newID()
        try await redis.send(RESPCommand("SET", "celery-task-meta-\(id)", "not json", "EX", 60))
        do {
            _ = try await AsyncResult(id: id, backend: redis).get(timeout: .seconds(1))
            Issue.record("a malformed result must throw")
        } catch let error as CeleryClientError {
            #expect(error.code == .malformedResult)
        }
    }

    @Test func chainGroupAndChord() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 8)) { _, redis in
            let client = Self.client(redis, queue: queue)
            let chain = try await client.chain([
                Signature("tasks.add", args: [1, 2]), Signature("tasks.add", args: [3]),
                Signature("tasks.mul", args: [10]),
            ])
            #expect(try await chain.get() == 60)
            let group = try await client.group((0..<20).map { Signature("tasks.add", args: [.int($0), .int($0)]) })
            #expect(try await group.get() == (0..<20).map { .int(2 * $0) })
            let chord = try await client.chord(
                (0..<10).map { Signature("tasks.add", args: [.int($0), .int($0)]) },
                Signature("tasks.xsum")
            )
            #expect(try await chord.get() == 90)
            let empty = try await client.chord([], Signature("tasks.xsum"))
            #expect(try await empty.get() == 0)
        }
    }
}
