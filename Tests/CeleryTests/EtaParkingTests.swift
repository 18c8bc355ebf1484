import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// ETA messages parked in Redis: the park and unpark scripts against a real Redis, and a worker that parks what is
/// due later so plain tasks behind it never wait.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct EtaParkingTests {
    private static func broker(_ redis: RedisClient, _ queue: String) -> KombuBroker {
        var layout = KombuLayout()
        layout.unackedKey = "unacked-\(queue)"
        layout.unackedIndexKey = "unacked-index-\(queue)"
        layout.parkedKeyPrefix = "eta-\(queue):"
        return KombuBroker(client: redis, layout: layout, logger: TestRedis.logger)
    }

    private static func eta(in seconds: Double) -> CeleryTimestamp {
        CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 + seconds)
    }

    @Test func parkingMovesFromUnackedAndUnparkingPutsBackOnTheRightListEarliestFirst() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let broker = Self.broker(redis, queue)
        let now = CeleryTimestamp.now().secondsSince1970
        // Three at priority 0 (due in 20 s, 10 s and 25 s), one at priority 5 (list step 3, due in 15 s).
        let messages = [
            (TestRedis.envelope(task: "tasks.add", queue: queue), 0, now + 20),
            (TestRedis.envelope(task: "tasks.add", queue: queue), 0, now + 10),
            (TestRedis.envelope(task: "tasks.add", queue: queue, priority: 5), 5, now + 15),
            (TestRedis.envelope(task: "tasks.add", queue: queue), 0, now + 25),
        ]
        for (message, priority, _) in messages {
            try await TestRedis.push(redis, KombuLayout.list(queue: queue, priority: priority), message.bytes)
        }
        let popped = try await broker.pop(lists: KombuLayout.lists(queues: [queue]), limit: 10)
        #expect(popped.count == 4)
        let parked = try await broker.park(
            popped.map { delivery in
                let due = messages.first { $0.0.tag == delivery.tag }!.2
                return ParkedMessage(tag: delivery.tag!, list: delivery.list, envelope: delivery.envelope, due: due)
            }
        )
        #expect(parked == [true, true, true, true])
        for (message, _, _) in messages {
            #expect(try await !TestRedis.inUnacked(redis, message.tag, key: "unacked-\(queue)"))
            #expect(try await redis.send(RESPCommand("ZSCORE", "unacked-index-\(queue)", message.tag)).isNull)
        }
        #expect(try await redis.send(RESPCommand("ZCARD", broker.parkedKey(queue: queue))).int == 4)

        // Nothing is due yet: nothing moves, and the earliest due time comes back.
        let early = try await broker.unpark(queues: [queue], until: now + 5, limit: 100)
        #expect(early.moved == 0 && !early.more)
        #expect(abs((early.earliest ?? 0) - (now + 10)) < 0.001)

        // Found by task id (query_task), and not by a prefix of one.
        let found = try await broker.findParked(ids: [messages[2].0.id], queues: [queue])
        #expect(found.map(\.envelope) == [messages[2].0.bytes])
        #expect(found.first?.list == KombuLayout.list(queue: queue, priority: 5))
        #expect(try await broker.findParked(ids: [String(messages[2].0.id.dropLast())], queues: [queue]).isEmpty)

        // Due by now + 16: the two earliest, each to its own list.
        let step = try await broker.unpark(queues: [queue], until: now + 16, limit: 100)
        #expect(step.moved == 2)
        #expect(abs((step.earliest ?? 0) - (now + 20)) < 0.001)
        let listed = try await broker.parked(queues: [queue], limit: 10)
        #expect(listed.map(\.envelope) == [messages[0].0.bytes, messages[3].0.bytes])
        #expect(listed.map(\.list) == [queue, queue])
        #expect(zip(listed.map(\.due), [now + 20, now + 25]).allSatisfy { abs($0 - $1) < 0.001 })
        let high = try await redis.send(RESPCommand("LRANGE", KombuLayout.list(queue: queue, priority: 5), 0, -1))
        #expect(high.array?.compactMap(\.bytes).map { Array($0.readableBytesView) } == [messages[2].0.bytes])
        #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 1)

        // The rest in one step: the earliest of them is taken first, and both before the one moved earlier.
        _ = try await broker.unpark(queues: [queue], until: now + 30, limit: 100)
        #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 3)
        let next = try await broker.pop(lists: [queue], limit: 3)
        #expect(next.map(\.tag) == [messages[0].0.tag, messages[3].0.tag, messages[1].0.tag])
        try await redis.send(
            RESPCommand(
                "DEL",
                queue,
                KombuLayout.list(queue: queue, priority: 5),
                "unacked-\(queue)",
                "unacked-index-\(queue)"
            )
        )
    }

    @Test func aMessageNoLongerInUnackedIsNotParked() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let broker = Self.broker(redis, queue)
        let message = TestRedis.envelope(task: "tasks.add", queue: queue)
        let parked = try await broker.park([
            ParkedMessage(
                tag: message.tag,
                list: queue,
                envelope: message.bytes,
                due: Self.eta(in: 60).secondsSince1970
            )
        ])
        #expect(parked == [false])
        #expect(try await redis.send(RESPCommand("EXISTS", broker.parkedKey(queue: queue))).int == 0)
    }

    @Test func moreThanTheLimitDueIsReported() async throws {
        let redis = try TestRedis.client()
        let queue = TestRedis.uniqueQueue()
        let broker = Self.broker(redis, queue)
        for _ in 0..<3 {
            let message = TestRedis.envelope(task: "tasks.add", queue: queue)
            try await TestRedis.push(redis, queue, message.bytes)
        }
        let popped = try await broker.pop(lists: [queue], limit: 10)
        _ = try await broker.park(
            popped.map { ParkedMessage(tag: $0.tag!, list: $0.list, envelope: $0.envelope, due: 1) }
        )
        let first = try await broker.unpark(queues: [queue], until: 2, limit: 2)
        #expect(first.moved == 2 && first.more)
        let second = try await broker.unpark(queues: [queue], until: 2, limit: 2)
        #expect(second.moved == 1 && !second.more && second.earliest == nil)
        try await redis.send(RESPCommand("DEL", queue, "unacked-\(queue)", "unacked-index-\(queue)"))
    }

    /// The starvation case, scaled down: ETA tasks due in an hour, then plain ones; with `--max-held` at 20
    /// and prefetch 4 they would stop the queue if held (the old behaviour); parked, the plain ones all run.
    @Test func plainTasksBehindAnETAFloodRun() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 2, prefetchMultiplier: 2)
        configuration.maximumHeld = 20
        configuration.parkETAAfter = .seconds(30)
        let later = Self.eta(in: 3600)
        try await TestRedis.withWorker(configuration) { worker, redis in
            let flood = (0..<500).map { _ in
                TestRedis.envelope(
                    task: "tasks.add",
                    args: [1, 1],
                    queue: queue,
                    extraHeaders: ["eta": .string(later.iso8601)]
                )
            }
            for message in flood { try await TestRedis.push(redis, queue, message.bytes) }
            let plain = (0..<50).map { TestRedis.envelope(task: "tasks.add", args: [.int($0), 1], queue: queue) }
            for message in plain { try await TestRedis.push(redis, queue, message.bytes) }
            for (index, message) in plain.enumerated() {
                #expect(
                    try await TestRedis.result(redis, message.id, timeout: .seconds(30))["result"] == .int(index + 1)
                )
            }
            try await TestRedis.waitUntilEmpty(redis, queue)
            for _ in 0..<500 where try await redis.send(RESPCommand("ZCARD", "swift-celery:eta:\(queue)")).int != 500 {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(try await redis.send(RESPCommand("ZCARD", "swift-celery:eta:\(queue)")).int == 500)
            #expect(worker.machine.withLock { $0.heldCount } == 0)
            for message in flood.prefix(20) { #expect(try await !TestRedis.inUnacked(redis, message.tag)) }
            try await redis.send(RESPCommand("DEL", "swift-celery:eta:\(queue)"))
        }
    }

    /// Parked because it is due later than the window, back in the queue shortly before its ETA, run at its ETA.
    @Test func aParkedMessageRunsAtItsETA() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 2)
        configuration.parkETAAfter = .seconds(1)
        try await TestRedis.withWorker(configuration) { worker, redis in
            // From now, not from before the worker started: on a loaded machine starting takes seconds, and a
            // message popped within 1 s of its ETA is held, not parked. It is parked if popped within 5 s.
            let eta = Self.eta(in: 6)
            let message = TestRedis.envelope(
                task: "tasks.add",
                args: [2, 3],
                queue: queue,
                extraHeaders: ["eta": .string(eta.iso8601)]
            )
            try await TestRedis.push(redis, queue, message.bytes)
            var parkedSeen = false
            for _ in 0..<400 where !parkedSeen {
                parkedSeen = try await redis.send(RESPCommand("ZCARD", "swift-celery:eta:\(queue)")).int == 1
                if !parkedSeen { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(parkedSeen)
            #expect(try await !TestRedis.inUnacked(redis, message.tag))
            let meta = try await TestRedis.result(redis, message.id, timeout: .seconds(15))
            #expect(meta["result"] == 5)
            #expect(CeleryTimestamp.now() >= eta)
            let done = try #require(meta["date_done"]?.stringValue.flatMap(CeleryTimestamp.init(iso8601:)))
            #expect(done >= eta)
            #expect(try await redis.send(RESPCommand("EXISTS", "swift-celery:eta:\(queue)")).int == 0)
        }
    }

    /// With the in-memory window full, a message due within it is parked too, and still runs.
    @Test func aFullWindowParksMessagesDueSoon() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 1, prefetchMultiplier: 1)
        configuration.maximumHeld = 3
        configuration.parkETAAfter = .seconds(60)
        let eta = Self.eta(in: 3)
        try await TestRedis.withWorker(configuration) { worker, redis in
            let messages = (0..<10).map {
                TestRedis.envelope(
                    task: "tasks.add",
                    args: [.int($0), 0],
                    queue: queue,
                    extraHeaders: ["eta": .string(eta.iso8601)]
                )
            }
            for message in messages { try await TestRedis.push(redis, queue, message.bytes) }
            try await TestRedis.waitUntilEmpty(redis, queue)
            #expect(worker.machine.withLock { $0.heldCount } <= 3)
            for (index, message) in messages.enumerated() {
                #expect(try await TestRedis.result(redis, message.id, timeout: .seconds(20))["result"] == .int(index))
            }
        }
    }
}
