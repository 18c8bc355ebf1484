import CeleryClient
import JSON
import RESP
import Redis
import TestSupport
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct RedisRateLimiterTests {
    @Test func allowsTheLimitPerWindowThenSaysWhenToComeBack() async throws {
        let limiter = RedisRateLimiter(client: try TestRedis.client())
        let key = TestRedis.uniqueQueue()
        var remaining: [Int] = []
        for _ in 0..<3 {
            let decision = try await limiter.attempt(key, limit: 3, window: .seconds(30))
            #expect(decision.allowed)
            remaining.append(decision.remaining)
        }
        #expect(remaining == [2, 1, 0])
        let denied = try await limiter.attempt(key, limit: 3, window: .seconds(30))
        #expect(!denied.allowed)
        #expect(denied.remaining == 0)
        #expect(denied.retryAfter > .zero && denied.retryAfter <= .seconds(30))
        #expect(denied.resetAfter >= denied.retryAfter)
    }

    @Test func aSlotComesBackWhenTheOldestCallLeavesTheWindow() async throws {
        let limiter = RedisRateLimiter(client: try TestRedis.client())
        let key = TestRedis.uniqueQueue()
        let first = ContinuousClock.now
        #expect(try await limiter.attempt(key, limit: 1, window: .milliseconds(400)).allowed)
        let denied = try await limiter.attempt(key, limit: 1, window: .milliseconds(400))
        if ContinuousClock.now - first < .milliseconds(350) {
            #expect(!denied.allowed)
            #expect(denied.retryAfter > .zero)
        }
        try await Task.sleep(for: denied.retryAfter + .milliseconds(50))
        #expect(try await limiter.attempt(key, limit: 1, window: .milliseconds(400)).allowed)
    }

    @Test func holdsAcrossConcurrentCallersAndKeys() async throws {
        let limiter = RedisRateLimiter(client: try TestRedis.client())
        let key = TestRedis.uniqueQueue()
        let allowed = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 {
                group.addTask { try await limiter.attempt(key, limit: 10, window: .seconds(30)).allowed }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(allowed == 10)
        #expect(try await limiter.attempt(key + "-other", limit: 10, window: .seconds(30)).allowed)
    }

    @Test func unreachableRedisIsAClearError() async throws {
        let port = TestServers.freePort()
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(port)/0")
        configuration.connectTimeout = .seconds(1)
        let limiter = RedisRateLimiter(client: RedisClient(configuration: configuration, logger: TestRedis.logger))
        do {
            _ = try await limiter.attempt("k", limit: 1, window: .seconds(1))
            Issue.record("expected an error")
        } catch let error as RedisError {
            #expect(error.code == .connectionRefused)
        }
    }
}

@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct RedisJSONCacheTests {
    @Test func storesReadsCountsAndForgets() async throws {
        let redis = try TestRedis.client()
        let cache = RedisJSONCache(client: redis)
        let key = TestRedis.uniqueQueue()
        #expect(try await cache.get(key) == nil)
        let value: JSONValue = ["name": "ünïcødé 😀", "list": [1, 2.5, nil, true], "big": .int(Int.max)]
        try await cache.set(key, value, ttl: .seconds(60))
        #expect(try await cache.get(key) == value)
        let ttl = try await redis.send(RESPCommand("PTTL", cache.keyPrefix + key)).int ?? -1
        #expect(ttl > 0 && ttl <= 60_000)
        #expect(try await cache.increment(key + ":n") == 1)
        #expect(try await cache.increment(key + ":n", by: 41) == 42)
        #expect(try await cache.delete(key))
        #expect(try await cache.get(key) == nil)
    }

    @Test func computesOnceAndRejectsValuesThatAreNotJSON() async throws {
        let redis = try TestRedis.client()
        let cache = RedisJSONCache(client: redis)
        let key = TestRedis.uniqueQueue()
        var calls = 0
        for _ in 0..<3 {
            let value = try await cache.value(key, ttl: .seconds(30)) {
                calls += 1
                return ["computed": true]
            }
            #expect(value == ["computed": true])
        }
        #expect(calls == 1)
        try await redis.send(RESPCommand("SET", cache.keyPrefix + key, "not json {"))
        await #expect(throws: JSONError.self) { try await cache.get(key) }
    }

    @Test func handlersReachThemThroughTheContext() async throws {
        let queue = TestRedis.uniqueQueue()
        var registry = TestRedis.defaultRegistry()
        registry.register("test.limited", parameters: ["key"]) { (context, key: String) in
            let decision = try await context.rateLimiter.attempt(key, limit: 2, window: .seconds(30))
            try await context.cache.set(key, ["allowed": .bool(decision.allowed)])
            return decision.allowed
        }
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 1), registry: registry) {
            _,
            redis in
            var results: [JSONValue] = []
            for _ in 0..<3 {
                let message = TestRedis.envelope(task: "test.limited", args: [.string(queue)], queue: queue)
                try await TestRedis.push(redis, queue, message.bytes)
                results.append(try await TestRedis.result(redis, message.id)["result"] ?? nil)
            }
            #expect(results == [true, true, false])
            #expect(try await RedisJSONCache(client: redis).get(queue) == ["allowed": false])
        }
    }
}
