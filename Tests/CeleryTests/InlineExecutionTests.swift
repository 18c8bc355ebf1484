import CeleryClient
import Foundation
import JSON
import NIOPosix
import RESP
import Redis
import Synchronization
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// A message that comes alone to an idle worker runs on the event loop that read it; others, and handlers that
/// are slow, limited in time or not yet seen, run on the global pool.
struct InlineExecutionTests {
    @Test func aHandlerIsQuickOnlyOnceSeenAndUntilASlowRunDecays() {
        let pace = HandlerPace()
        #expect(!pace.isQuick(below: .milliseconds(1)))  // never seen
        pace.record(.microseconds(50))
        #expect(pace.isQuick(below: .milliseconds(1)))
        pace.record(.milliseconds(60))
        #expect(!pace.isQuick(below: .milliseconds(1)))
        // 60 → 30 → 15 → 7.5 → 3.75 → 1.9 → 0.94 ms: quick again after six quick runs.
        for run in 1...6 {
            #expect(!pace.isQuick(below: .milliseconds(1)), "after \(run - 1) quick runs")
            pace.record(.microseconds(50))
        }
        #expect(pace.isQuick(below: .milliseconds(1)))
        pace.record(.seconds(Int64.max / 2))  // no overflow
        #expect(!pace.isQuick(below: .milliseconds(1)))
    }
}

/// Where handlers run in a worker whose connections are on one event loop, against the real redis-server.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct InlineExecutionWorkerTests {
    /// Registers `test.where` (returns whether it ran on an event loop thread) and `test.spin` (the same, after
    /// computing for `ms` milliseconds without suspending).
    static func registry() -> TaskRegistry {
        var registry = TestRedis.defaultRegistry()
        registry.register("test.where", parameters: []) { (_: TaskContext) in
            MultiThreadedEventLoopGroup.currentEventLoop != nil
        }
        registry.register("test.spin", parameters: ["ms"]) { (_: TaskContext, ms: Int) in
            let end = ContinuousClock.now + .milliseconds(ms)
            while ContinuousClock.now < end {}
            return MultiThreadedEventLoopGroup.currentEventLoop != nil
        }
        return registry
    }

    static func runOneAtATime(
        _ redis: RedisClient,
        _ queue: String,
        task: String,
        args: [JSONValue] = [],
        extraHeaders: JSONObject = [:],
        times: Int
    ) async throws -> [JSONValue?] {
        var onLoop: [JSONValue?] = []
        for _ in 0..<times {
            let message = TestRedis.envelope(task: task, args: args, queue: queue, extraHeaders: extraHeaders)
            try await TestRedis.push(redis, queue, message.bytes)
            let meta = try await TestRedis.result(redis, message.id)
            #expect(meta["status"] == "SUCCESS")
            onLoop.append(meta["result"])
        }
        return onLoop
    }

    /// A limit no run misses on a loaded test machine (the default, 1 ms, is for the slow-handler test).
    static func configuration(_ queue: String, concurrency: Int) -> WorkerConfiguration {
        var configuration = WorkerConfiguration(queues: [queue], concurrency: concurrency)
        configuration.inlineHandlerLimit = .seconds(1)
        return configuration
    }

    @Test func aQuickHandlerRunsOnTheLoopOnceSeenWhenTheWorkerIsIdle() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = Self.configuration(queue, concurrency: 4)
        try await TestRedis.withWorker(configuration, registry: Self.registry()) { _, redis in
            let onLoop = try await Self.runOneAtATime(redis, queue, task: "test.where", times: 6)
            // The first run is off the loop (not yet known to be quick), then on it.
            #expect(onLoop == [false, true, true, true, true, true])
        }
    }

    @Test func aSlowOrTimeLimitedHandlerStaysOffTheLoop() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = WorkerConfiguration(queues: [queue], concurrency: 2)
        try await TestRedis.withWorker(configuration, registry: Self.registry()) { _, redis in
            let slow = try await Self.runOneAtATime(redis, queue, task: "test.spin", args: [5], times: 3)
            #expect(slow == [false, false, false])
            _ = try await Self.runOneAtATime(redis, queue, task: "test.where", times: 2)
            let limited = try await Self.runOneAtATime(
                redis,
                queue,
                task: "test.where",
                extraHeaders: ["timelimit": [30, nil]],
                times: 2
            )
            #expect(limited == [false, false])
        }
    }

    @Test func aLimitOfZeroKeepsEveryHandlerOffTheLoop() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 2)
        configuration.inlineHandlerLimit = .zero
        try await TestRedis.withWorker(configuration, registry: Self.registry()) { _, redis in
            let onLoop = try await Self.runOneAtATime(redis, queue, task: "test.where", times: 3)
            #expect(onLoop == [false, false, false])
        }
    }

    @Test func aWorkerOfOneExecutorDrainsABacklogAndStillRunsLoneMessagesInline() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = Self.configuration(queue, concurrency: 1)
        try await TestRedis.withWorker(configuration, registry: Self.registry()) { _, redis in
            _ = try await Self.runOneAtATime(redis, queue, task: "test.where", times: 1)
            // One LPUSH: the first pop brings as many as the prefetch credit allows (4), not one alone.
            var ids: [String] = []
            var push = RESPCommand("LPUSH", queue)
            for _ in 0..<200 {
                let message = TestRedis.envelope(task: "test.where", queue: queue)
                ids.append(message.id)
                push.append(RESPBytes(message.bytes))
            }
            try await redis.send(push)
            var offLoop = 0
            for id in ids {
                let meta = try await TestRedis.result(redis, id)
                #expect(meta["status"] == "SUCCESS")
                if meta["result"] == false { offLoop += 1 }
            }
            // Messages popped together run on the global pool; later pops of one, when the executor was waiting
            // for work, may run inline.
            #expect(offLoop >= 4, "\(offLoop) of 200 off the loop")
            #expect(try await Self.runOneAtATime(redis, queue, task: "test.where", times: 2) == [true, true])
        }
    }
}
