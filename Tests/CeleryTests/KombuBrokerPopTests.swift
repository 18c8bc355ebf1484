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
