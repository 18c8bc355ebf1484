import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// A hostile message the pop script recorded in `unacked` must leave it again, or the visibility-timeout restore
/// would put it back on the queue every hour (found by Tests/Interop/test_poison.py).
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerUnackedCleanupTests {
    func configuration(_ queue: String) -> WorkerConfiguration {
        var configuration = WorkerConfiguration(queues: [queue])
        configuration.unackedKey = "unacked-cleanup"
        configuration.unackedIndexKey = "unacked-cleanup_index"
        configuration.unackedMutexKey = "unacked-cleanup_mutex"
        return configuration
    }

    @Test func unparsableEnvelopeWithADeliveryTagIsAckedAndDeadLettered() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(configuration(queue)) { _, redis in
            let message = TestRedis.envelope(task: "tasks.add", args: [1, 2], queue: queue)
            // Cut after the delivery tag: the pop's text search finds the tag, the JSON parser refuses the text.
            let truncated = Array(message.bytes.dropLast())
            try await TestRedis.push(redis, queue, truncated)
            let good = TestRedis.envelope(task: "tasks.add", args: [2, 2], queue: queue)
            try await TestRedis.push(redis, queue, good.bytes)
            #expect(try await TestRedis.result(redis, good.id)["result"] == 4)
            #expect(try await TestRedis.eventuallyAcked(redis, message.tag, key: "unacked-cleanup"))
            let letters = try await redis.send(RESPCommand("LRANGE", "swift-celery:dead-letter", 0, 100)).array ?? []
            #expect(letters.contains { $0.bytes.map { Array($0.readableBytesView) } == truncated })
        }
    }

    @Test func decoyDeliveryTagBeforeTheRealOne() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(configuration(queue)) { _, redis in
            let decoy = "decoy-\(UUID().uuidString)"
            // headers come before properties: the pop records the message under the decoy.
            let message = TestRedis.envelope(
                task: "tasks.add",
                args: [3, 4],
                queue: queue,
                extraHeaders: ["delivery_tag": .string(decoy)]
            )
            try await TestRedis.push(redis, queue, message.bytes)
            #expect(try await TestRedis.result(redis, message.id)["result"] == 7)
            #expect(try await TestRedis.eventuallyAcked(redis, decoy, key: "unacked-cleanup"))
            #expect(try await TestRedis.eventuallyAcked(redis, message.tag, key: "unacked-cleanup"))
        }
    }

    /// A pop whose reply is lost (Redis killed after the script ran) leaves its messages recorded in `unacked`
    /// under the pop's stamp; recovering by that stamp puts them back on their lists now, not after the
    /// visibility timeout, and leaves other workers' entries alone.
    @Test func lostPopReplyIsRecoveredByItsStamp() async throws {
        let queue = TestRedis.uniqueQueue()
        let redis = try TestRedis.client()
        var layout = KombuLayout()
        layout.unackedKey = "unacked-lostpop"
        layout.unackedIndexKey = "unacked-lostpop_index"
        let broker = KombuBroker(client: redis, layout: layout, logger: TestRedis.logger)
        let messages = (0..<3).map { TestRedis.envelope(task: "tasks.add", args: [.int($0), 1], queue: queue) }
        for message in messages { try await TestRedis.push(redis, queue, message.bytes) }
        let other = TestRedis.envelope(task: "tasks.add", args: [9, 9], queue: queue)
        try await TestRedis.push(redis, queue, other.bytes)

        let stamp = KombuBroker.now()
        let popped = try await broker.pop(lists: [queue], limit: 3, stamp: stamp)  // the reply we "lose"
        #expect(popped.count == 3)
        _ = try await broker.pop(lists: [queue], limit: 1)  // another pop (another worker): a different stamp
        #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 0)

        let restored = try await broker.recoverLostPop(stamp: stamp, holding: [])
        #expect(restored == 3)
        #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 3)
        for message in messages { #expect(try await !TestRedis.inUnacked(redis, message.tag, key: layout.unackedKey)) }
        #expect(try await TestRedis.inUnacked(redis, other.tag, key: layout.unackedKey))
        let back = try await redis.send(RESPCommand("RPOP", queue))
        let envelope = try JSONValue(parsing: Array(try #require(back.bytes).readableBytesView))
        #expect(envelope["headers"]?["redelivered"] == true)
        #expect(try await broker.recoverLostPop(stamp: stamp, holding: []) == 0)
        await redis.close()
    }
}
