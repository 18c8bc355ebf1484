import CeleryClient
import ExtrasBase64
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Every kind of malformed message against a running worker: the worker's answer, and the next message runs.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerBadInputTests {
    /// Pushes `bad`, then a valid task; returns after the valid task's result exists.
    func sendBadThenGood(_ bad: [UInt8], queue: String, redis: RedisClient) async throws {
        try await TestRedis.push(redis, queue, bad)
        let good = TestRedis.envelope(task: "tasks.add", args: [20, 22], queue: queue)
        try await TestRedis.push(redis, queue, good.bytes)
        #expect(try await TestRedis.result(redis, good.id)["result"] == 42)
    }

    func deadLettered(_ redis: RedisClient, _ bytes: [UInt8]) async throws -> Bool {
        let items = try await redis.send(RESPCommand("LRANGE", "swift-celery:dead-letter", 0, 200)).array ?? []
        return items.contains { $0.bytes.map { Array($0.readableBytesView) } == bytes }
    }

    /// An envelope with one thing broken by `change`.
    func broken(queue: String, _ change: (inout JSONObject) -> Void) -> (id: String, tag: String, bytes: [UInt8]) {
        let message = TestRedis.envelope(task: "tasks.add", args: [1, 2], queue: queue)
        var object = try! JSONValue(parsing: message.bytes).objectValue!
        change(&object)
        return (message.id, message.tag, JSONValue.object(object).serialized())
    }

    @Test func envelopeThatIsNotJSON() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let bad = Array("{\"body\": \"W10=\", \"headers\": {\"task\": \"tasks.add\"".utf8) + Array(queue.utf8)
            try await sendBadThenGood(bad, queue: queue, redis: redis)
            #expect(try await deadLettered(redis, bad))
        }
    }

    @Test func missingDeliveryTagStoresFailureAndKeepsACopy() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let bad = broken(queue: queue) { object in
                var properties = object["properties"]!.objectValue!
                properties.removeValue(forKey: "delivery_tag")
                object["properties"] = .object(properties)
            }
            try await sendBadThenGood(bad.bytes, queue: queue, redis: redis)
            let meta = try await TestRedis.result(redis, bad.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "DecodeError")
            #expect(try await deadLettered(redis, bad.bytes))
        }
    }

    @Test func bodyThatIsNotBase64() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let bad = broken(queue: queue) { $0["body"] = "%%% not base64 %%%" }
            try await sendBadThenGood(bad.bytes, queue: queue, redis: redis)
            let meta = try await TestRedis.result(redis, bad.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_module"] == "kombu.exceptions")
            #expect(try await TestRedis.eventuallyAcked(redis, bad.tag))
            #expect(try await deadLettered(redis, bad.bytes))
        }
    }

    @Test func twoElementBody() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let bad = broken(queue: queue) {
                $0["body"] = .string(Base64.encodeToString(bytes: Array("[[1, 2], {}]".utf8)))
            }
            try await sendBadThenGood(bad.bytes, queue: queue, redis: redis)
            let meta = try await TestRedis.result(redis, bad.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_message"]?[0]?.stringValue?.contains("expected 3 elements, got 2") == true)
            #expect(try await TestRedis.eventuallyAcked(redis, bad.tag))
        }
    }

    @Test func unknownTaskIsNotRegistered() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let bad = TestRedis.envelope(task: "tasks.does_not_exist", queue: queue)
            try await sendBadThenGood(bad.bytes, queue: queue, redis: redis)
            let meta = try await TestRedis.result(redis, bad.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "NotRegistered")
            #expect(meta["result"]?["exc_module"] == "celery.exceptions")
            #expect(meta["result"]?["exc_message"] == ["tasks.does_not_exist"])
            #expect(try await TestRedis.eventuallyAcked(redis, bad.tag))
        }
    }

    @Test(arguments: ["application/x-python-serialize", "application/x-yaml", "application/x-msgpack"])
    func unacceptedContentTypes(contentType: String) async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let bad = broken(queue: queue) { $0["content-type"] = .string(contentType) }
            try await sendBadThenGood(bad.bytes, queue: queue, redis: redis)
            let meta = try await TestRedis.result(redis, bad.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "ContentDisallowed")
            #expect(try await TestRedis.eventuallyAcked(redis, bad.tag))
        }
    }

    @Test func wrongArgumentTypes() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let bad = TestRedis.envelope(task: "tasks.cpu", args: [["not": "an int"]], queue: queue)
            try await sendBadThenGood(bad.bytes, queue: queue, redis: redis)
            let meta = try await TestRedis.result(redis, bad.id)
            #expect(meta["result"]?["exc_type"] == "TypeError")
            #expect(meta["result"]?["exc_message"] == ["cpu() argument 'n' must be int, not dict"])
        }
    }

    @Test func tenMegabyteMessage() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let big = String(repeating: "λ", count: 5_000_000)  // 10 MB of UTF-8
            let message = TestRedis.envelope(task: "tasks.identity", args: [.string(big)], queue: queue)
            try await TestRedis.push(redis, queue, message.bytes)
            let meta = try await TestRedis.result(redis, message.id, timeout: .seconds(30))
            #expect(meta["result"]?.stringValue?.count == 5_000_000)
        }
    }
}
