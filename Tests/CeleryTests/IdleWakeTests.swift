import CeleryClient
import Foundation
import JSON
import Logging
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The idle wait (`IdleFetch.blmove`, the default) against the real redis-server of scripts/test-redis.sh.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct IdleWakeTests {
    /// How many connections are blocked in BLMOVE on `list` (CLIENT LIST shows the last command of each).
    static func blockedInBLMOVE(_ redis: RedisClient) async throws -> Int {
        let clients = try await redis.send(RESPCommand("CLIENT", "LIST")).string ?? ""
        return clients.split(separator: "\n").filter { $0.contains("cmd=blmove") }.count
    }

    @Test func anIdleWorkerWaitsInBLMOVEAndTakesWhatArrives() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = WorkerConfiguration(queues: [queue], concurrency: 2)
        #expect(configuration.idleFetch == .blmove)
        try await TestRedis.withWorker(configuration) { worker, redis in
            // The queue and its three priority lists, each watched on its own connection.
            let deadline = ContinuousClock.now + .seconds(10)
            while try await Self.blockedInBLMOVE(redis) < 4, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(try await Self.blockedInBLMOVE(redis) >= 4)
            for i in 0..<5 {
                let message = TestRedis.envelope(task: "tasks.add", args: [.int(i), 10], queue: queue)
                try await TestRedis.push(redis, queue, message.bytes)
                #expect(try await TestRedis.result(redis, message.id)["result"] == .int(i + 10))
                #expect(try await TestRedis.eventuallyAcked(redis, message.tag))
            }
            // A priority list wakes the worker too.
            let urgent = TestRedis.envelope(task: "tasks.add", args: [1, 1], queue: queue)
            try await TestRedis.push(redis, KombuLayout.list(queue: queue, priority: 9), urgent.bytes)
            #expect(try await TestRedis.result(redis, urgent.id)["result"] == 2)
            #expect(!worker.idleWake.isUnavailable)
        }
    }

    /// An ACL without `+blmove` (as an older Redis without the command): the worker says so and polls instead.
    /// A pop that brings fewer messages than it asked for goes straight to the idle wait; a message pushed
    /// between that pop and the wait must still be taken at once. With a 60 s idle wait, one the worker missed
    /// would sit for a minute.
    @Test func messagesPushedRightAfterAPartialPopAreTakenAtOnce() async throws {
        let queue = TestRedis.uniqueQueue()
        let configuration = WorkerConfiguration(queues: [queue], concurrency: 2, idlePollTimeout: .seconds(60))
        try await TestRedis.withWorker(configuration) { _, redis in
            var ids: [String] = []
            for i in 0..<200 {
                let message = TestRedis.envelope(task: "tasks.add", args: [.int(i), 1], queue: queue)
                try await TestRedis.push(redis, queue, message.bytes)
                ids.append(message.id)
                if i % 3 == 0 { try await Task.sleep(for: .microseconds(Int.random(in: 0...2000))) }
            }
            for (i, id) in ids.enumerated() {
                #expect(try await TestRedis.result(redis, id, timeout: .seconds(20))["result"] == .int(i + 1))
            }
        }
    }

    @Test func aRefusedBLMOVEFallsBackToPolling() async throws {
        let admin = try TestRedis.client()
        let user = "idle-wake-\(UUID().uuidString.prefix(8))"
        try await admin.send(RESPCommand("ACL", "SETUSER", user, "on", ">idle-pass", "~*", "&*", "+@all", "-blmove"))
        defer { Task { try? await admin.send(RESPCommand("ACL", "DELUSER", user)) } }
        var url = URLComponents(string: TestRedis.url!)!
        url.user = user
        url.password = "idle-pass"
        let client = RedisClient(configuration: try RedisConfiguration(url: url.string!), logger: TestRedis.logger)
        let queue = TestRedis.uniqueQueue()
        let configuration = WorkerConfiguration(queues: [queue], concurrency: 2)
        try await TestRedis.withWorker(configuration, client: client) { worker, _ in
            let deadline = ContinuousClock.now + .seconds(10)
            while !worker.idleWake.isUnavailable, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(worker.idleWake.isUnavailable)
            for i in 0..<3 {
                let message = TestRedis.envelope(task: "tasks.add", args: [.int(i), 1], queue: queue)
                try await TestRedis.push(admin, queue, message.bytes)
                #expect(try await TestRedis.result(admin, message.id)["result"] == .int(i + 1))
            }
        }
    }

    @Test func onlyARefusalOfTheCommandTurnsBLMOVEOff() {
        let noperm = RedisError(
            .serverError,
            "NOPERM User idle has no permissions to run the 'blmove' command"
        )
        let unknown = RedisError(.serverError, "ERR unknown command 'BLMOVE', with args beginning with: 'q'")
        let wrongType = RedisError(
            .serverError,
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        )
        #expect(IdleWake.refusal(noperm) != nil)
        #expect(IdleWake.refusal(unknown) != nil)
        #expect(IdleWake.refusal(wrongType) == nil)
        #expect(IdleWake.refusal(RedisError(.connectionClosed, "closed")) == nil)
    }
}
