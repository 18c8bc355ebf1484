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

/// An in-process worker against the real redis-server of scripts/test-redis.sh.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerIntegrationTests {
    @Test func runsTasksAndStoresResultsAsCeleryDoes() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 4, hostname: "swift@test")) {
            _,
            redis in
            let add = TestRedis.envelope(task: "tasks.add", args: [2, 3], queue: queue)
            try await TestRedis.push(redis, queue, add.bytes)
            let meta = try await TestRedis.result(redis, add.id)
            #expect(meta["status"] == "SUCCESS")
            #expect(meta["result"] == 5)
            // Celery's key order, task_id last.
            #expect(
                meta.objectValue?.keys.elements == [
                    "status", "result", "traceback", "children", "date_done", "task_id",
                ]
            )
            #expect(try await TestRedis.eventuallyAcked(redis, add.tag))
            // kombu's binding for the queue is declared.
            let member = queue + "\u{06}\u{16}\u{06}\u{16}" + queue
            #expect(try await redis.send(RESPCommand("SISMEMBER", "_kombu.binding.\(queue)", member)).int == 1)
        }
    }

    @Test func blockingIdleFetchAsKombuDoes() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 2)
        configuration.idleFetch = .brpop
        try await TestRedis.withWorker(configuration) { _, redis in
            // Idle: the worker is in BRPOP when these arrive.
            try await Task.sleep(for: .milliseconds(200))
            for i in 0..<5 {
                let message = TestRedis.envelope(task: "tasks.add", args: [.int(i), 1], queue: queue)
                try await TestRedis.push(redis, queue, message.bytes)
                #expect(try await TestRedis.result(redis, message.id)["result"] == .int(i + 1))
                #expect(try await TestRedis.eventuallyAcked(redis, message.tag))
            }
        }
    }

    @Test func resultsArePublishedForWaitingClients() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let message = TestRedis.envelope(task: "tasks.identity", args: ["published"], queue: queue)
            let payload = try await redis.withSubscription(channels: ["celery-task-meta-\(message.id)"]) {
                subscription in
                try await TestRedis.push(redis, queue, message.bytes)
                var iterator = subscription.messages.makeAsyncIterator()
                return try await iterator.next()
            }
            let meta = try JSONValue(parsing: Array(try #require(payload).payload.readableBytesView))
            #expect(meta["result"] == "published")
        }
    }

    @Test func extendedResultsAndTrackStarted() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = WorkerConfiguration(
            queues: [queue],
            hostname: "swift@ext",
            resultExtended: true,
            trackStarted: true
        )
        try await TestRedis.withWorker(configuration) { _, redis in
            let message = TestRedis.envelope(task: "tasks.sleep", args: [1.5], queue: queue)
            try await TestRedis.push(redis, queue, message.bytes)
            let started = try await TestRedis.result(redis, message.id, state: "STARTED")
            #expect(started["result"]?["hostname"] == "swift@ext")
            #expect(started["result"]?["pid"]?.intValue != nil)
            let meta = try await TestRedis.result(redis, message.id)
            #expect(meta["status"] == "SUCCESS")
            #expect(meta["name"] == "tasks.sleep")
            #expect(meta["args"] == [1.5])
            #expect(meta["kwargs"] == [:])
            #expect(meta["worker"] == "swift@ext")
            #expect(meta["retries"] == 0)
            #expect(meta["queue"] == .string(queue))
        }
    }

    @Test func ignoreResultStoresNothing() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 1)) { _, redis in
            let ignored = TestRedis.envelope(
                task: "tasks.add",
                args: [1, 1],
                queue: queue,
                extraHeaders: ["ignore_result": true]
            )
            let after = TestRedis.envelope(task: "tasks.add", args: [2, 2], queue: queue)
            try await TestRedis.push(redis, queue, ignored.bytes)
            try await TestRedis.push(redis, queue, after.bytes)
            _ = try await TestRedis.result(redis, after.id)
            #expect(try await redis.send(RESPCommand("EXISTS", "celery-task-meta-\(ignored.id)")).int == 0)
            #expect(try await TestRedis.eventuallyAcked(redis, ignored.tag))
        }
    }

    @Test func higherPriorityListsAreServedFirst() async throws {
        let queue = TestRedis.uniqueQueue()
        let order = "test:order:\(queue)"
        var registry = TestRedis.defaultRegistry()
        registry.register("test.record", parameters: ["label"]) { (context, label: String) in
            try await context.redis.send(RESPCommand("RPUSH", order, label))
            return label
        }
        let redis = try TestRedis.client()
        // Enqueued before the worker starts: least urgent first.
        var ids: [String] = []
        for (label, priority) in [("p9", 9), ("p6", 6), ("p3", 3), ("p0", 0)] {
            let message = TestRedis.envelope(
                task: "test.record",
                args: [.string(label)],
                queue: queue,
                priority: priority
            )
            try await TestRedis.push(redis, KombuLayout.list(queue: queue, priority: priority), message.bytes)
            ids.append(message.id)
        }
        let allIDs = ids
        try await TestRedis.withWorker(
            WorkerConfiguration(queues: [queue], concurrency: 1, prefetchMultiplier: 1),
            registry: registry
        ) { _, redis in
            for id in allIDs { _ = try await TestRedis.result(redis, id) }
        }
        let ran = try await redis.send(RESPCommand("LRANGE", order, 0, -1)).array?.compactMap(\.string)
        #expect(ran == ["p0", "p3", "p6", "p9"])
    }

    @Test func etaIsHeldAndExpiredTasksAreRevoked() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let eta = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 + 6.0)
            let later = TestRedis.envelope(
                task: "tasks.add",
                args: [1, 2],
                queue: queue,
                extraHeaders: ["eta": .string(eta.iso8601)]
            )
            let past = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 - 5)
            let expired = TestRedis.envelope(
                task: "tasks.add",
                args: [1, 2],
                queue: queue,
                extraHeaders: ["expires": .string(past.iso8601)]
            )
            try await TestRedis.push(redis, queue, later.bytes)
            try await TestRedis.push(redis, queue, expired.bytes)
            let revoked = try await TestRedis.result(redis, expired.id)
            #expect(revoked["status"] == "REVOKED")
            #expect(revoked["result"]?["exc_type"] == "TaskRevokedError")
            #expect(revoked["result"]?["exc_message"] == ["expired"])
            // Held, not run, and still recorded in unacked until it runs.
            try await TestRedis.waitUntilEmpty(redis, queue)
            #expect(CeleryTimestamp.now() < eta, "the machine is too slow for this check")
            #expect(try await redis.send(RESPCommand("EXISTS", "celery-task-meta-\(later.id)")).int == 0)
            #expect(try await TestRedis.inUnacked(redis, later.tag))
            let meta = try await TestRedis.result(redis, later.id)
            #expect(meta["result"] == 3)
            // It ran at its ETA, not before.
            let done = try #require(meta["date_done"]?.stringValue.flatMap { CeleryTimestamp(iso8601: $0) })
            #expect(done >= eta)
        }
    }

    @Test func warmShutdownRestoresMessagesThatDidNotStart() async throws {
        let queue = TestRedis.uniqueQueue()
        let redis = try TestRedis.client()
        let running = TestRedis.envelope(task: "tasks.sleep", args: [2], queue: queue)
        let waiting = (0..<3).map { TestRedis.envelope(task: "tasks.add", args: [.int($0), 0], queue: queue) }
        try await TestRedis.push(redis, queue, running.bytes)
        for message in waiting { try await TestRedis.push(redis, queue, message.bytes) }
        let configuration = WorkerConfiguration(
            queues: [queue],
            concurrency: 1,
            prefetchMultiplier: 4,
            trackStarted: true
        )
        try await TestRedis.withWorker(configuration) { _, redis in
            // Let the worker fetch everything and start the sleep, then stop (withWorker stops on return).
            try await TestRedis.waitUntilEmpty(redis, queue)
            _ = try await TestRedis.result(redis, running.id, state: "STARTED")
        }
        // The running task finished; the others are back on the list, marked redelivered, out of unacked.
        #expect(try await TestRedis.result(redis, running.id)["status"] == "SUCCESS")
        let restored = try await redis.send(RESPCommand("LRANGE", queue, 0, -1)).array ?? []
        #expect(restored.count == 3)
        for item in restored {
            let message = try TaskMessage(envelope: Array(try #require(item.bytes).readableBytesView))
            #expect(message.redelivered)
            #expect(try await TestRedis.eventuallyAcked(redis, message.deliveryTag))
            #expect(try await redis.send(RESPCommand("EXISTS", "celery-task-meta-\(message.id)")).int == 0)
        }
        // RPUSHed back to the consuming end, in the order they would have run.
        let ids = try restored.reversed().map { try TaskMessage(envelope: Array($0.bytes!.readableBytesView)).id }
        #expect(ids == waiting.map(\.id))
    }

    @Test func acksLateAcksAfterTheResult() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 1, acksLate: true)) {
            _,
            redis in
            let message = TestRedis.envelope(task: "tasks.sleep", args: [2], queue: queue)
            try await TestRedis.push(redis, queue, message.bytes)
            try await TestRedis.waitUntilEmpty(redis, queue)
            // Popped and running: in unacked under acks_late (recorded right after an idle BRPOP, so poll briefly),
            // and no result yet.
            var recorded = false
            for _ in 0..<50 where !recorded {
                recorded = try await TestRedis.inUnacked(redis, message.tag)
                if !recorded { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(recorded)
            #expect(try await redis.send(RESPCommand("EXISTS", "celery-task-meta-\(message.id)")).int == 0)
            _ = try await TestRedis.result(redis, message.id)
            try await Task.sleep(for: .milliseconds(100))
            #expect(try await TestRedis.eventuallyAcked(redis, message.tag))
        }
    }
}
