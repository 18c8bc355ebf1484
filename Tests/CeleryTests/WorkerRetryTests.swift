import CeleryClient
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// `throw TaskRetry(...)`: the next attempt is a new message with the same id; past max retries the task fails.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerRetryTests {
    @Test func flakyRetriesUntilItSucceeds() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue])) { _, redis in
            let message = TestRedis.envelope(task: "tasks.flaky", args: [3], queue: queue)
            try await TestRedis.push(redis, queue, message.bytes)
            let meta = try await TestRedis.result(redis, message.id)
            #expect(meta["status"] == "SUCCESS")
            // The handler returns the retries count it saw: three new messages, each with retries + 1.
            #expect(meta["result"] == 3)
        }
    }

    @Test func retryIsStoredAndTheNextAttemptWaitsForItsETA() async throws {
        let queue = TestRedis.uniqueQueue()
        var registry = TestRedis.defaultRegistry()
        registry.register("test.later", parameters: []) { (context: TaskContext) in
            guard context.retries > 0 else {
                throw TaskRetry(countdown: .seconds(2), cause: PythonException(type: "RuntimeError", "not yet"))
            }
            return context.retries
        }
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue]), registry: registry) { _, redis in
            let message = TestRedis.envelope(task: "test.later", queue: queue)
            let sent = CeleryTimestamp.now()
            try await TestRedis.push(redis, queue, message.bytes)
            let retry = try await TestRedis.result(redis, message.id, state: "RETRY")
            #expect(retry["result"]?["exc_type"] == "RuntimeError")
            #expect(retry["result"]?["exc_message"] == ["not yet"])
            #expect(retry["date_done"]?.isNull == true)
            let meta = try await TestRedis.result(redis, message.id)
            #expect(meta["result"] == 1)
            let done = try #require(meta["date_done"]?.stringValue.flatMap { CeleryTimestamp(iso8601: $0) })
            #expect(done.secondsSince1970 - sent.secondsSince1970 >= 2)
        }
    }

    @Test func failsWithTheCauseAfterMaxRetries() async throws {
        let queue = TestRedis.uniqueQueue()
        let counter = "test:attempts:\(queue)"
        var registry = TestRedis.defaultRegistry()
        registry.register("test.doomed", parameters: []) { (context: TaskContext) -> NoResult in
            try await context.redis.send(RESPCommand("INCR", counter))
            throw TaskRetry(
                countdown: .milliseconds(50),
                maxRetries: 2,
                cause: PythonException.valueError("still broken")
            )
        }
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue]), registry: registry) { _, redis in
            let message = TestRedis.envelope(task: "test.doomed", queue: queue)
            try await TestRedis.push(redis, queue, message.bytes)
            let meta = try await TestRedis.result(redis, message.id)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "ValueError")
            #expect(meta["result"]?["exc_message"] == ["still broken"])
            // The first run and two retries.
            #expect(try await redis.send(RESPCommand("GET", counter)).int == 3)
        }
    }

    @Test func autoretryRetriesMatchingErrorsWithBackoff() async throws {
        let queue = TestRedis.uniqueQueue()
        let counter = "test:auto:\(queue)"
        struct Flaky: Error {}
        var registry = TestRedis.defaultRegistry()
        let policy = AutoRetry(maxRetries: 2, backoff: .milliseconds(20), jitter: false) { $0 is Flaky }
        registry.register("test.auto", parameters: ["succeedOn"], options: TaskOptions(autoretry: policy)) {
            (context, succeedOn: Int) in
            let attempt = try await context.redis.send(RESPCommand("INCR", "\(counter):\(succeedOn)")).int ?? 0
            guard attempt >= succeedOn else { throw Flaky() }
            return attempt
        }
        registry.register("test.other", parameters: [], options: TaskOptions(autoretry: policy)) {
            (_: TaskContext) -> NoResult in
            throw PythonException.valueError("not retried")
        }
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue]), registry: registry) { _, redis in
            let second = TestRedis.envelope(task: "test.auto", args: [2], queue: queue)
            let never = TestRedis.envelope(task: "test.auto", args: [10], queue: queue)
            let other = TestRedis.envelope(task: "test.other", queue: queue)
            for message in [second, never, other] { try await TestRedis.push(redis, queue, message.bytes) }
            #expect(try await TestRedis.result(redis, second.id)["result"] == 2)
            let failed = try await TestRedis.result(redis, never.id)
            #expect(failed["result"]?["exc_type"] == "Flaky")
            #expect(try await redis.send(RESPCommand("GET", "\(counter):10")).int == 3)  // first run + 2 retries
            let notRetried = try await TestRedis.result(redis, other.id)
            #expect(notRetried["result"]?["exc_type"] == "ValueError")
        }
    }
}
