import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The pop script's field search: kombu's spacing, compact JSON and any other spacing all record the message under
/// its tag with its exchange and routing key, which the visibility restore (Python's or Swift's) reads back.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct KombuBrokerPopTests {
    /// kombu's restore gives a message back at the consuming end (RPUSH); its reject(requeue=True), which
    /// `TaskReject(requeue: true)` follows, at the far end (LPUSH), behind what was queued meanwhile. Both mark it
    /// redelivered.
    @Test(arguments: [false, true])
    func aRestoreGoesToTheConsumingEndARequeuedRejectToTheBack(atBack: Bool) async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let layout = CrashGuardRedisTests.layout(queue, maximumCrashes: 0)
        let broker = KombuBroker(client: redis, layout: layout, logger: TestRedis.logger)
        let first = TestRedis.envelope(task: "tasks.add", args: [1, 2], queue: queue)
        let later = TestRedis.envelope(task: "tasks.add", args: [3, 4], queue: queue)
        try await TestRedis.push(redis, queue, first.bytes)
        let delivery = try #require(try await broker.pop(lists: [queue], limit: 1).first)
        try await TestRedis.push(redis, queue, later.bytes)
        #expect(try await broker.restore(delivery, deliveryTag: first.tag, atBack: atBack))
        var order: [String] = []
        for _ in 0..<2 {
            let next = try #require(try await broker.pop(lists: [queue], limit: 1).first)
            let message = try TaskMessage(envelope: next.envelope)
            #expect(message.redelivered == (message.id == first.id))
            order.append(message.id)
        }
        #expect(order == (atBack ? [later.id, first.id] : [first.id, later.id]))
        try await CrashGuardRedisTests.cleanUp(redis, layout, queue: queue)
    }

    @Test func everySpacingIsRecordedWithItsExchangeAndRoutingKey() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let key = "unacked-\(queue)"
        var layout = KombuLayout()
        layout.unackedKey = key
        layout.unackedIndexKey = key + "-index"
        let broker = KombuBroker(client: redis, layout: layout, logger: TestRedis.logger)
        let messages: [(tag: String, exchange: String, routingKey: String, text: String)] = [
            (
                "tag-spaced", "", queue,
                #"{"body": "", "properties": {"delivery_info": {"exchange": "", "routing_key": "\#(queue)"}, "#
                    + #""delivery_tag": "tag-spaced"}}"#
            ),
            (
                "tag-compact", "ex", "rk",
                #"{"body":"","properties":{"delivery_info":{"exchange":"ex","routing_key":"rk"},"#
                    + #""delivery_tag":"tag-compact"}}"#
            ),
            (
                "tag-odd", "", "q",
                #"{"properties": {"delivery_tag" :  "tag-odd", "delivery_info": {"exchange" : "", "#
                    + #""routing_key":"q"}}}"#
            ),
        ]
        for message in messages {
            try await TestRedis.push(redis, queue, Array(message.text.utf8))
        }
        let popped = try await broker.pop(lists: [queue], limit: 10)
        #expect(popped.map(\.tag) == messages.map(\.tag))
        for message in messages {
            let stored = try #require(try await redis.send(RESPCommand("HGET", key, message.tag)).string)
            let record = try JSONValue(parsing: stored)
            #expect(
                record == [
                    try JSONValue(parsing: message.text), .string(message.exchange), .string(message.routingKey),
                ]
            )
            #expect(try await redis.send(RESPCommand("ZSCORE", key + "-index", message.tag)).string != nil)
        }
        try await redis.send(RESPCommand("DEL", key, key + "-index"))
    }
}
