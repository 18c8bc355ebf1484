import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import TestSupport
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Bounded memory for ETA messages, and a worker that carries on when Redis goes away and comes back.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerResilienceTests {
    @Test func heldMessagesAreBounded() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 1, prefetchMultiplier: 4)
        configuration.maximumHeld = 5
        configuration.parkETAAfter = nil
        try await TestRedis.withWorker(configuration) { worker, redis in
            // Far enough ahead for CI's start, where every suite begins at once on 2 cores (4 s was not).
            let eta = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 + 10)
            let messages = (0..<20).map {
                TestRedis.envelope(
                    task: "tasks.add",
                    args: [.int($0), 0],
                    queue: queue,
                    extraHeaders: ["eta": .string(eta.iso8601)]
                )
            }
            for message in messages { try await TestRedis.push(redis, queue, message.bytes) }
            // 5 held without credit, then 4 holding the whole prefetch credit: fetching stops there.
            for _ in 0..<700 where worker.machine.withLock { $0.heldCount } < 9 {
                try await Task.sleep(for: .milliseconds(10))
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(CeleryTimestamp.now() < eta, "the machine is too slow for this check")
            #expect(worker.machine.withLock { $0.heldCount } == 9)
            #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 11)
            // Once due, they run, free their credit, and the rest are fetched and run.
            for message in messages {
                #expect(try await TestRedis.result(redis, message.id, timeout: .seconds(30))["status"] == "SUCCESS")
            }
        }
    }

    @Test func consumesAgainAfterRedisRestarts() async throws {
        let server = try OwnRedisServer()
        try await server.start()
        let client = RedisClient(configuration: try RedisConfiguration(url: server.url), logger: TestRedis.logger)
        let queue = "restart"
        let first = (0..<200).map { TestRedis.envelope(task: "tasks.add", args: [.int($0), 1], queue: queue) }
        for message in first { try await TestRedis.push(client, queue, message.bytes) }
        let worker = Worker(
            configuration: WorkerConfiguration(queues: [queue], concurrency: 8),
            registry: TestRedis.defaultRegistry(),
            broker: client,
            backend: client,
            logger: TestRedis.logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            for message in first { _ = try await TestRedis.result(client, message.id) }
            // Redis goes away (SHUTDOWN would save; a crash is harsher) and comes back empty.
            server.kill()
            try await Task.sleep(for: .milliseconds(500))
            try await server.start()
            let back = ContinuousClock.now
            let second = (0..<200).map { TestRedis.envelope(task: "tasks.add", args: [.int($0), 2], queue: queue) }
            for message in second { try await TestRedis.push(client, queue, message.bytes) }
            for (index, message) in second.enumerated() {
                let meta = try await TestRedis.result(client, message.id, timeout: .seconds(15))
                #expect(meta["result"] == .int(index + 2))
            }
            #expect(ContinuousClock.now - back < .seconds(10))
            worker.stop()
            try await group.waitForAll()
        }
        await client.close()
    }

    @Test func fiveThousandTasksThroughARedisCrashAndAClientKill() async throws {
        let server = try OwnRedisServer(persistent: true)
        try await server.start()
        let client = RedisClient(configuration: try RedisConfiguration(url: server.url), logger: TestRedis.logger)
        let queue = "through-crash"
        let messages = (0..<5000).map { TestRedis.envelope(task: "tasks.add", args: [.int($0), 1], queue: queue) }
        for chunk in stride(from: 0, to: messages.count, by: 500) {
            let commands = messages[chunk..<min(chunk + 500, messages.count)].map {
                RESPCommand("LPUSH", queue, RESPBytes($0.bytes))
            }
            for reply in try await client.pipeline(commands) { _ = try reply.get() }
        }
        let worker = Worker(
            configuration: WorkerConfiguration(queues: [queue], concurrency: 8, visibilityTimeout: .seconds(2)),
            registry: TestRedis.defaultRegistry(),
            broker: client,
            backend: client,
            logger: TestRedis.logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            // Mid-way, the server dies (kill -9, AOF always on) and comes back with its data.
            _ = try await TestRedis.result(client, messages[1000].id, timeout: .seconds(30))
            server.kill()
            try await Task.sleep(for: .milliseconds(300))
            try await server.start()
            // Then every client connection is dropped.
            _ = try await TestRedis.result(client, messages[3000].id, timeout: .seconds(30))
            try await client.send(RESPCommand("CLIENT", "KILL", "TYPE", "normal"))
            var missing = messages.map(\.id)
            let deadline = ContinuousClock.now + .seconds(60)
            while !missing.isEmpty, ContinuousClock.now < deadline {
                let replies = try? await client.pipeline(
                    missing.map { RESPCommand("EXISTS", "celery-task-meta-\($0)") }
                )
                if let replies {
                    missing = zip(missing, replies).filter { (try? $0.1.get().int) != 1 }.map(\.0)
                }
                if !missing.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(missing.isEmpty, "\(missing.count) of 5000 tasks have no result")
            worker.stop()
            try await group.waitForAll()
        }
        await client.close()
    }
}
