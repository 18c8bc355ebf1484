import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// `timelimit` is `[hard, soft]`: soft cancels the handler, hard fails the task and frees the slot.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerTimeLimitTests {
    static func registry() -> TaskRegistry {
        var registry = TestRedis.defaultRegistry()
        registry.register("test.tidy", parameters: []) { (_: TaskContext) -> String in
            do {
                try await Task.sleep(for: .seconds(30))
                return "finished"
            } catch {
                return "cleaned up"  // caught the soft limit's cancellation
            }
        }
        registry.registerBlocking("test.stuck", parameters: ["seconds"]) { (_, seconds: Double) in
            usleep(UInt32(seconds * 1_000_000))  // ignores cancellation, holds its thread
            return seconds
        }
        return registry
    }

    @Test func softLimitCancelsTheHandler() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue]), registry: Self.registry()) { _, redis in
            let sleeper = TestRedis.envelope(
                task: "tasks.sleep",
                args: [30],
                queue: queue,
                extraHeaders: ["timelimit": [nil, 0.3]]
            )
            let tidy = TestRedis.envelope(task: "test.tidy", queue: queue, extraHeaders: ["timelimit": [nil, 0.3]])
            try await TestRedis.push(redis, queue, sleeper.bytes)
            try await TestRedis.push(redis, queue, tidy.bytes)
            let failed = try await TestRedis.result(redis, sleeper.id)
            #expect(failed["result"]?["exc_type"] == "SoftTimeLimitExceeded")
            #expect(failed["result"]?["exc_module"] == "billiard.exceptions")
            #expect(try await TestRedis.result(redis, tidy.id)["result"] == "cleaned up")
        }
    }

    @Test func hardLimitFailsTheTaskAndFreesTheSlot() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = WorkerConfiguration(queues: [queue], concurrency: 1)
        try await TestRedis.withWorker(configuration, registry: Self.registry()) { _, redis in
            let stuck = TestRedis.envelope(
                task: "test.stuck",
                args: [10],
                queue: queue,
                extraHeaders: ["timelimit": [0.3, nil]]
            )
            let next = TestRedis.envelope(task: "tasks.add", args: [1, 1], queue: queue)
            let sent = ContinuousClock.now
            try await TestRedis.push(redis, queue, stuck.bytes)
            try await TestRedis.push(redis, queue, next.bytes)
            let failed = try await TestRedis.result(redis, stuck.id)
            #expect(failed["result"]?["exc_type"] == "TimeLimitExceeded")
            #expect(failed["result"]?["exc_message"] == [0.3])
            // With one slot, the next task runs while the stuck handler still holds its thread.
            #expect(try await TestRedis.result(redis, next.id)["result"] == 2)
            #expect(ContinuousClock.now - sent < .seconds(8))
        }
    }
}
