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

/// Remote control, the shared revoked set and rate limits on an in-process worker against a real Redis.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerControlTests {
    static func request(_ method: String, ticket: String?, replyKey: String?, destination: [String]) -> [UInt8] {
        var body: JSONObject = [
            "method": .string(method), "arguments": [:], "destination": .array(destination.map { .string($0) }),
            "pattern": nil, "matcher": nil,
        ]
        if let ticket, let replyKey {
            body["ticket"] = .string(ticket)
            body["reply_to"] = ["exchange": "reply.celery.pidbox", "routing_key": .string(replyKey)]
        }
        let envelope: JSONValue = [
            "body": .string(Base64.encodeToString(bytes: JSONValue.object(body).serialized())),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": ["clock": 41, "expires": 1e10],
            "properties": [
                "delivery_mode": 2, "delivery_info": ["exchange": "celery.pidbox", "routing_key": ""],
                "priority": 0, "body_encoding": "base64", "delivery_tag": "t",
            ],
        ]
        return envelope.serialized()
    }

    /// Polls the reply list (no BRPOP: the worker shares this client's connection).
    static func popReply(_ redis: RedisClient, _ list: String) async throws -> RESPToken? {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let reply = try await redis.send(RESPCommand("RPOP", list))
            if !reply.isNull { return reply }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    @Test func pingIsAnsweredOnTheClientsReplyQueueAndGarbageIsIgnored() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue])
        configuration.hostname = "ctl-\(UUID().uuidString.prefix(8))@test"
        let hostname = configuration.hostname
        try await TestRedis.withWorker(configuration) { _, redis in
            let oid = UUID().uuidString.lowercased()
            let replyList = "\(oid).reply.celery.pidbox"
            let sep = KombuLayout.separator
            try await redis.send(RESPCommand("SADD", "_kombu.binding.reply.celery.pidbox", oid + sep + sep + replyList))
            for garbage in ["not json", #"{"body": "!!", "properties": {"body_encoding": "base64"}}"#] {
                try await redis.send(RESPCommand("PUBLISH", "/0.celery.pidbox", garbage))
            }
            // Not for us: no answer. For us: an answer with our ticket.
            let other = Self.request("ping", ticket: "t-0", replyKey: oid, destination: ["someone@else"])
            try await redis.send(RESPCommand("PUBLISH", "/0.celery.pidbox", RESPBytes(other)))
            let mine = Self.request("ping", ticket: "t-1", replyKey: oid, destination: [hostname])
            try await redis.send(RESPCommand("PUBLISH", "/0.celery.pidbox", RESPBytes(mine)))
            let raw = try #require(try await Self.popReply(redis, replyList)?.bytes)
            let envelope = try JSONValue(parsing: Array(raw.readableBytesView))
            #expect(envelope["headers"]?["ticket"] == "t-1")
            #expect((envelope["headers"]?["clock"]?.intValue ?? 0) > 41)
            #expect(envelope["properties"]?["delivery_info"]?["routing_key"] == .string(oid))
            let body = try JSONValue(
                parsing: try Base64.decode(string: try #require(envelope["body"]?.stringValue))
            )
            #expect(body == [hostname: ["ok": "pong"]])
            #expect(try await redis.send(RESPCommand("LLEN", replyList)).int == 0)

            // A reply for a client that is gone (no binding) leaves no list behind.
            let gone = UUID().uuidString.lowercased()
            let late = Self.request("ping", ticket: "t-2", replyKey: gone, destination: [hostname])
            try await redis.send(RESPCommand("PUBLISH", "/0.celery.pidbox", RESPBytes(late)))
            let again = Self.request("ping", ticket: "t-3", replyKey: oid, destination: [hostname])
            try await redis.send(RESPCommand("PUBLISH", "/0.celery.pidbox", RESPBytes(again)))
            #expect(try await Self.popReply(redis, replyList) != nil)
            #expect(try await redis.send(RESPCommand("EXISTS", "\(gone).reply.celery.pidbox")).int == 0)
        }
    }

    @Test func aTaskRevokedBeforeTheWorkerStartedIsDiscarded() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue])
        configuration.revokedKey = "test-revoked-\(UUID().uuidString.prefix(8))"
        let redis = try TestRedis.client()
        let revoked = TestRedis.envelope(task: "tasks.add", args: [1, 2], queue: queue)
        let other = TestRedis.envelope(task: "tasks.add", args: [2, 2], queue: queue)
        let now = CeleryTimestamp.now().secondsSince1970
        try await redis.send(RESPCommand("ZADD", configuration.revokedKey, String(now), revoked.id))
        try await redis.send(RESPCommand("ZADD", configuration.revokedKey, String(now - 20_000), other.id))  // expired
        try await TestRedis.withWorker(configuration) { _, redis in
            try await TestRedis.push(redis, queue, revoked.bytes)
            try await TestRedis.push(redis, queue, other.bytes)
            let meta = try await TestRedis.result(redis, revoked.id)
            #expect(meta["status"] == "REVOKED")
            #expect(meta["result"]?["exc_message"] == ["revoked"])
            #expect(meta["children"] == [])
            #expect(try await TestRedis.eventuallyAcked(redis, revoked.tag))
            // An id revoked more than 3 hours ago no longer counts (Celery's REVOKE_EXPIRES).
            #expect(try await TestRedis.result(redis, other.id)["result"] == 4)
        }
        try await redis.send(RESPCommand("DEL", configuration.revokedKey))
        await redis.close()
    }

    @Test func rateLimitedMessagesWaitWithoutASlotAndGoBackAtShutdown() async throws {
        let queue = TestRedis.uniqueQueue()
        var registry = TestRedis.defaultRegistry()
        registry.register("test.slow", parameters: ["x"], options: TaskOptions(rateLimit: "1/m")) { (_, x: Int) in x }
        // An invalid rate is logged at start and the task runs without a limit.
        registry.register("test.badrate", parameters: ["x"], options: TaskOptions(rateLimit: "abc")) { (_, x: Int) in x
        }
        let configuration = WorkerConfiguration(queues: [queue], concurrency: 1)
        let slow = (0..<3).map { TestRedis.envelope(task: "test.slow", args: [.int($0)], queue: queue) }
        try await TestRedis.withWorker(configuration, registry: registry) { worker, redis in
            for message in slow { try await TestRedis.push(redis, queue, message.bytes) }
            #expect(try await TestRedis.result(redis, slow[0].id)["result"] == 0)
            // The other two wait for their turn without holding the only execution slot.
            let fast = TestRedis.envelope(task: "test.badrate", args: [7], queue: queue)
            try await TestRedis.push(redis, queue, fast.bytes)
            #expect(try await TestRedis.result(redis, fast.id)["result"] == 7)
            let waiting = worker.machine.withLock { $0.rateLimitedMessages.count }
            #expect(waiting == 2)
            let reserved = WorkerControlTarget(worker: worker).reservedRequests().compactMap { $0["id"]?.stringValue }
            #expect(Set(reserved) == [slow[1].id, slow[2].id])
        }
        let redis = try TestRedis.client()
        let back = try await redis.send(RESPCommand("LRANGE", queue, 0, -1)).array ?? []
        let ids = try back.compactMap { item -> String? in
            try JSONValue(parsing: Array(try #require(item.bytes).readableBytesView))["headers"]?["id"]?.stringValue
        }
        #expect(Set(ids) == [slow[1].id, slow[2].id])
        for message in slow.dropFirst() { #expect(try await !TestRedis.inUnacked(redis, message.tag)) }
        try await redis.send(RESPCommand("DEL", queue))
        await redis.close()
    }

    @Test func globalSlotsAreSharedThroughRedis() async throws {
        let redis = try TestRedis.client()
        let prefix = "test-rate-\(UUID().uuidString.prefix(8)):"
        // Two limiters stand for two workers: they draw from one schedule, one slot a minute.
        let first = GlobalRateLimiter(client: redis, keyPrefix: prefix)
        let second = GlobalRateLimiter(client: try TestRedis.client(), keyPrefix: prefix)
        let limit = try TaskRateLimit("1/m")
        var waits: [Duration] = []
        for index in 0..<4 {
            let limiter = index.isMultiple(of: 2) ? first : second
            waits.append(try await limiter.reserve("t", limit: limit) ?? .zero)
        }
        #expect(waits[0] == .zero)
        for (index, wait) in waits.enumerated().dropFirst() {
            let expected = Duration.seconds(60 * index)
            #expect(wait <= expected && wait > expected - .seconds(5), "slot \(index): \(wait)")
        }
        // Another task name has its own schedule.
        #expect(try await first.reserve("other", limit: limit) == nil)
        let ttl = try await redis.send(RESPCommand("PTTL", prefix + "t")).int ?? -1
        #expect(ttl > 180_000 && ttl <= 241_000)
        try await redis.send(RESPCommand("DEL", prefix + "t", prefix + "other"))
        await redis.close()
        await second.client.close()
    }
}
