import CeleryClient
import Foundation
import JSON
import NIOCore
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// kombu's visibility timeout: a dead worker's messages come back; a live worker's held messages do not.
///
/// These workers use a short visibility timeout, so they record in `unacked` keys of their own: with the shared
/// default keys they would restore messages that the other tests' workers (timeout 1 h) hold.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerVisibilityTests {
    @Test func messagesOfADeadWorkerAreRestoredAndRun() async throws {
        let queue = TestRedis.uniqueQueue()
        let redis = try TestRedis.client()
        var configuration = WorkerConfiguration(queues: [queue], visibilityTimeout: .seconds(2))
        configuration.unackedKey = "\(queue):unacked"
        configuration.unackedIndexKey = "\(queue):unacked_index"
        configuration.unackedMutexKey = "\(queue):unacked_mutex"
        // What a worker killed with SIGKILL leaves behind: recorded in unacked long ago, on no list.
        let orphan = TestRedis.envelope(task: "tasks.add", args: [40, 2], queue: queue)
        var value = ByteBuffer(string: "[")
        value.writeBytes(orphan.bytes)
        value.writeString(", \"\", \"\(queue)\"]")
        let longAgo = CeleryTimestamp.now().secondsSince1970 - 100
        _ = try await redis.transaction([
            RESPCommand("HSET", configuration.unackedKey, orphan.tag, value),
            RESPCommand("ZADD", configuration.unackedIndexKey, longAgo, orphan.tag),
        ])
        try await TestRedis.withWorker(configuration) { _, redis in
            let meta = try await TestRedis.result(redis, orphan.id)
            #expect(meta["result"] == 42)
            #expect(try await TestRedis.eventuallyAcked(redis, orphan.tag, key: configuration.unackedKey))
        }
    }

    @Test func heldMessagesAreRefreshedAndRunExactlyOnce() async throws {
        let queue = TestRedis.uniqueQueue()
        let counter = "test:runs:\(queue)"
        var registry = TestRedis.defaultRegistry()
        registry.register("test.count", parameters: []) { (context: TaskContext) in
            try await context.redis.send(RESPCommand("INCR", counter)).int ?? 0
        }
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 4, visibilityTimeout: .seconds(2))
        configuration.unackedKey = "\(queue):unacked"
        configuration.unackedIndexKey = "\(queue):unacked_index"
        configuration.unackedMutexKey = "\(queue):unacked_mutex"
        try await TestRedis.withWorker(configuration, registry: registry) { _, redis in
            // Held for 4 visibility timeouts.
            let eta = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 + 8)
            let later = TestRedis.envelope(
                task: "test.count",
                queue: queue,
                extraHeaders: ["eta": .string(eta.iso8601)]
            )
            try await TestRedis.push(redis, queue, later.bytes)
            try await TestRedis.waitUntilEmpty(redis, queue)
            // Meanwhile the restore loop runs every second and the worker moves the message's score forward every
            // 500 ms. How old the score gets, and how many samples fit before the ETA, depend on how soon the loaded
            // test process runs its loops, so the test looks at what must hold whatever the timing: until the ETA the
            // message stays in unacked_index, its score keeps moving, and it never comes back to its queue.
            var scores: [Double] = []
            while CeleryTimestamp.now().secondsSince1970 < eta.secondsSince1970 - 1 {
                try await Task.sleep(for: .milliseconds(500))
                let score = try await redis.send(RESPCommand("ZSCORE", configuration.unackedIndexKey, later.tag)).double
                // A reply read after the ETA may follow the task's run and ack.
                guard CeleryTimestamp.now() < eta else { break }
                #expect(score != nil, "a held message stays in unacked_index until its ETA")
                if let score {
                    #expect(score >= scores.last ?? score)
                    scores.append(score)
                }
                #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 0)
            }
            #expect(Set(scores).count >= 3, "refreshed while held: \(scores)")
            #expect(try await TestRedis.result(redis, later.id)["result"] == 1)
            try await Task.sleep(for: .seconds(1.5))
            #expect(try await redis.send(RESPCommand("GET", counter)).int == 1)
        }
    }
}
