import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Results and acks as the batcher writes them, against the real redis-server of scripts/test-redis.sh.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WriteBatcherTests {
    /// Stores three results and acks three messages through a batcher, with one client for both or two; checks
    /// what Redis holds afterwards.
    static func storeAndAck(sameClient: Bool) async throws {
        let redis = try TestRedis.client()
        let other = sameClient ? redis : try TestRedis.client()
        var layout = KombuLayout()
        let prefix = "batcher-\(UUID().uuidString)"
        layout.unackedKey = prefix + "-unacked"
        layout.unackedIndexKey = prefix + "-unacked-index"
        let ids = (0..<3).map { _ in UUID().uuidString }
        let tags = (0..<3).map { _ in UUID().uuidString }
        let kept = "kept-" + UUID().uuidString
        for tag in tags + [kept] {
            try await redis.send(RESPCommand("HSET", layout.unackedKey, tag, "[]"))
            try await redis.send(RESPCommand("ZADD", layout.unackedIndexKey, "1", tag))
        }
        // Celery's guard: a stored SUCCESS is not overwritten.
        let done = #"{"status": "SUCCESS", "result": 1}"#
        try await redis.send(RESPCommand("SET", ResultBackend.keyPrefix + ids[2], done))

        let batcher = WriteBatcher(
            backend: other,
            broker: redis,
            layout: layout,
            resultTTL: 600,
            logger: TestRedis.logger
        )
        let running = Task { await batcher.run() }
        for (i, (id, tag)) in zip(ids, tags).enumerated() {
            batcher.storeResult(taskID: id, meta: ["status": "SUCCESS", "result": .int(i), "task_id": .string(id)])
            batcher.ack(deliveryTag: tag)
        }
        batcher.close()
        await running.value

        for (i, id) in ids.enumerated() {
            let stored = try #require(try await redis.send(RESPCommand("GET", ResultBackend.keyPrefix + id)).string)
            if i == 2 {
                #expect(stored == done)
            } else {
                #expect(try JSONValue(parsing: Array(stored.utf8))["result"] == .int(i))
                let ttl = try await redis.send(RESPCommand("TTL", ResultBackend.keyPrefix + id)).int ?? -1
                #expect(ttl > 0 && ttl <= 600)
            }
        }
        for tag in tags {
            #expect(try await redis.send(RESPCommand("HEXISTS", layout.unackedKey, tag)).int == 0)
            #expect(try await redis.send(RESPCommand("ZSCORE", layout.unackedIndexKey, tag)).isNull)
        }
        // What was not acked stays.
        #expect(try await redis.send(RESPCommand("HEXISTS", layout.unackedKey, kept)).int == 1)
        #expect(try await redis.send(RESPCommand("ZSCORE", layout.unackedIndexKey, kept)).isNull == false)
        try await redis.send(RESPCommand("DEL", layout.unackedKey, layout.unackedIndexKey))
        for id in ids { try await redis.send(RESPCommand("DEL", ResultBackend.keyPrefix + id)) }
    }

    @Test func oneRedisStoresResultsAndAcksInOneScript() async throws {
        try await Self.storeAndAck(sameClient: true)
    }

    @Test func twoClientsStoreResultsThenAck() async throws {
        try await Self.storeAndAck(sameClient: false)
    }

    @Test func theScriptCallPutsTheAcksAfterThePayloads() {
        let call = ResultBackend.storeCall(
            results: [("celery-task-meta-a", "A"), ("celery-task-meta-b", "B")],
            acks: ["t1", "t2", "t3"],
            ttl: 86400,
            unackedKey: "unacked",
            unackedIndexKey: "unacked_index"
        )
        #expect(call.keys == ["celery-task-meta-a", "celery-task-meta-b", "unacked", "unacked_index"])
        #expect(call.arguments == ["86400", "2", "A", "B", "t1", "t2", "t3"])
        let withoutAcks = ResultBackend.storeCall(
            results: [("celery-task-meta-a", "A")],
            acks: [],
            ttl: 0,
            unackedKey: "unacked",
            unackedIndexKey: "unacked_index"
        )
        #expect(withoutAcks.keys == ["celery-task-meta-a"])
        #expect(withoutAcks.arguments == ["0", "1", "A"])
    }
}
