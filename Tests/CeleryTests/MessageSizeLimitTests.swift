import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// `--max-message-size`: parsing the option, finding the task id in an oversized message without parsing it.
@Suite struct MessageSizeParsingTests {
    @Test(arguments: [
        ("0", 0), ("1048576", 1_048_576), ("512k", 512 << 10), ("512KiB", 512 << 10), ("64MiB", 64 << 20),
        ("64m", 64 << 20), ("2G", 2 << 30), ("10b", 10), ("1kb", 1024),
    ])
    func validSizes(text: String, bytes: Int) {
        #expect(ByteSize(parsing: text)?.bytes == bytes)
    }

    @Test(arguments: ["", "-1", "64 MiB", "MiB", "1.5M", "12q", "99999999999999999999", "9999999999999G", "0x10"])
    func invalidSizesAreRefused(text: String) {
        #expect(ByteSize(parsing: text) == nil)
    }

    @Test func description() {
        #expect(ByteSize(bytes: 64 << 20).description == "64 MiB")
        #expect(ByteSize(bytes: 1000).description == "1000 bytes")
    }

    @Test func fieldSearchMatchesTheScript() {
        let text = Array(#"{"body": "QUJD", "headers": {"task": "tasks.add", "root_id": "r", "id" :  "abc-1"}}"#.utf8)
        #expect(OversizedMessage.field("id", in: text) == "abc-1")
        #expect(OversizedMessage.field("task", in: text) == "tasks.add")
        #expect(OversizedMessage.field("correlation_id", in: text) == nil)
        // An escaped or empty value is not taken (the Lua pattern needs one or more plain characters).
        #expect(OversizedMessage.field("id", in: Array(#"{"id": "a\"b"}"#.utf8)) == nil)
        #expect(OversizedMessage.field("id", in: Array(#"{"id": ""}"#.utf8)) == nil)
        #expect(OversizedMessage.field("id", in: Array(#"{"id": 5, "x": "y"}"#.utf8)) == nil)
        #expect(OversizedMessage.field("id", in: Array(#"{"id": "unterminated"#.utf8)) == nil)
    }

    @Test func scanningFindsTheIDAtEitherEnd() {
        let filler = [UInt8](repeating: UInt8(ascii: "A"), count: 200_000)
        let tailID = Array(#"{"body": ""#.utf8) + filler + Array(#"", "headers": {"id": "t-1", "task": "x.y"}}"#.utf8)
        #expect(
            OversizedMessage(scanning: tailID) == OversizedMessage(size: tailID.count, taskID: "t-1", taskName: "x.y")
        )
        let headID = Array(#"{"headers": {"id": "h-1"}, "body": ""#.utf8) + filler + Array(#""}"#.utf8)
        #expect(OversizedMessage(scanning: headID).taskID == "h-1")
        let middle = Array(#"{"a": ""#.utf8) + filler + Array(#"", "id": "m-1", "b": ""#.utf8) + filler + [34, 125]
        #expect(OversizedMessage(scanning: middle).taskID == nil)
    }
}

/// Oversized messages against a running worker: measured before parsing, dead-lettered, FAILURE when the id is
/// known, and the next message runs.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct MessageSizeLimitTests {
    static let limit = 64 << 10

    func configuration(_ queue: String, brpop: Bool = false) -> WorkerConfiguration {
        var configuration = WorkerConfiguration(queues: [queue])
        configuration.maximumMessageSize = Self.limit
        if brpop { configuration.idleFetch = .brpop }
        return configuration
    }

    func deadLetterHolds(_ redis: RedisClient, count: Int) async throws -> Bool {
        let items = try await redis.send(RESPCommand("LRANGE", "swift-celery:dead-letter", 0, 50)).array ?? []
        return items.contains { $0.bytes?.readableBytes == count }
    }

    @Test(arguments: [false, true])
    func oversizedMessageFailsWithLimitExceeded(brpop: Bool) async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(configuration(queue, brpop: brpop)) { _, redis in
            let big = String(repeating: "x", count: 100_000)
            let message = TestRedis.envelope(task: "tasks.identity", args: [.string(big)], queue: queue)
            #expect(message.bytes.count > Self.limit)
            try await TestRedis.push(redis, queue, message.bytes)
            let meta = try await TestRedis.result(redis, message.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "LimitExceeded")
            #expect(meta["result"]?["exc_module"] == "kombu.exceptions")
            let text = meta["result"]?["exc_message"]?[0]?.stringValue ?? ""
            #expect(text.contains("\(message.bytes.count) bytes exceeds the worker's limit of \(Self.limit) bytes"))
            #expect(try await !TestRedis.inUnacked(redis, message.tag))
            #expect(try await deadLetterHolds(redis, count: message.bytes.count))

            let small = TestRedis.envelope(task: "tasks.add", args: [1, 2], queue: queue)
            try await TestRedis.push(redis, queue, small.bytes)
            #expect(try await TestRedis.result(redis, small.id)["result"] == 3)
        }
    }

    @Test func oversizedMessageWithoutAnIDIsKeptAndTheNextRuns() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(configuration(queue)) { _, redis in
            let junk = [UInt8](repeating: UInt8(ascii: "["), count: Self.limit + 1)
            try await TestRedis.push(redis, queue, junk)
            let good = TestRedis.envelope(task: "tasks.add", args: [2, 2], queue: queue)
            try await TestRedis.push(redis, queue, good.bytes)
            #expect(try await TestRedis.result(redis, good.id)["result"] == 4)
            #expect(try await deadLetterHolds(redis, count: junk.count))
        }
    }

    @Test func messageAtTheLimitRuns() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(configuration(queue)) { _, redis in
            let bare = TestRedis.envelope(task: "tasks.identity", args: [""], queue: queue)
            // The argument goes into the base64 body: 3 bytes of it make 4 characters. Start a little above the
            // limit and shrink to the largest message that fits.
            var length = (Self.limit - bare.bytes.count) * 3 / 4 + 8
            func message(_ length: Int) -> [UInt8] {
                TestRedis.envelope(
                    task: "tasks.identity",
                    id: bare.id,
                    args: [.string(String(repeating: "y", count: length))],
                    queue: queue,
                    tag: bare.tag
                ).bytes
            }
            while message(length).count > Self.limit { length -= 1 }
            let bytes = message(length)
            #expect(bytes.count > Self.limit - 4)
            try await TestRedis.push(redis, queue, bytes)
            let meta = try await TestRedis.result(redis, bare.id)
            #expect(meta["status"] == "SUCCESS")
        }
    }
}
