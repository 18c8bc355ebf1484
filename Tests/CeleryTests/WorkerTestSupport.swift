import CeleryClient
import ExtrasBase64
import Foundation
import JSON
import Logging
import NIOCore
import NIOPosix
import RESP
import Redis
import Tasks
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The servers scripts/test-redis.sh started, and helpers to run an in-process worker against them.
enum TestRedis {
    /// How long a test waits for a worker to say it is ready. Every suite starts at once on CI's 2 cores; with a
    /// build running beside the tests, workers have needed more than 10 s.
    static let readyWithin: Duration = .seconds(30)

    static let env = ProcessInfo.processInfo.environment
    static var url: String? { env["SWIFT_CELERY_TEST_REDIS_URL"] }
    static var available: Bool { url != nil }

    static let logger: Logger = {
        var logger = Logger(label: "celery-tests")
        logger.logLevel = .critical
        return logger
    }()

    static func client(
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws -> RedisClient {
        RedisClient(configuration: try RedisConfiguration(url: url!), eventLoopGroup: eventLoopGroup, logger: logger)
    }

    static func uniqueQueue(_ name: String = #function) -> String {
        "test-\(name.prefix(while: { $0 != "(" }))-\(UUID().uuidString.prefix(8))"
    }

    /// A kombu envelope as Celery 5.7 writes it, for `task` with `args`/`kwargs` on `queue`.
    static func envelope(
        task: String,
        id: String = UUID().uuidString.lowercased(),
        args: [JSONValue] = [],
        kwargs: JSONObject = [:],
        queue: String,
        priority: Int = 0,
        extraHeaders: JSONObject = [:],
        tag: String = UUID().uuidString.lowercased()
    ) -> (id: String, tag: String, bytes: [UInt8]) {
        let body: JSONValue = [
            .array(args), .object(kwargs), ["callbacks": nil, "errbacks": nil, "chain": nil, "chord": nil],
        ]
        var headers: JSONObject = [
            "lang": "py", "task": .string(task), "id": .string(id), "shadow": nil, "eta": nil, "expires": nil,
            "group": nil, "group_index": nil, "retries": 0, "timelimit": [nil, nil], "root_id": .string(id),
            "parent_id": nil, "argsrepr": "()", "kwargsrepr": "{}", "origin": "test@host", "ignore_result": false,
        ]
        for (key, value) in extraHeaders { headers[key] = value }
        let envelope: JSONValue = [
            "body": .string(Base64.encodeToString(bytes: body.serialized())),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": .object(headers),
            "properties": [
                "correlation_id": .string(id), "reply_to": "", "delivery_mode": 2,
                "delivery_info": ["exchange": "", "routing_key": .string(queue)], "priority": .int(priority),
                "body_encoding": "base64", "delivery_tag": .string(tag),
            ],
        ]
        return (id, tag, envelope.serialized())
    }

    static func push(_ client: RedisClient, _ list: String, _ bytes: [UInt8]) async throws {
        try await client.send(RESPCommand("LPUSH", list, RESPBytes(bytes)))
    }

    /// Waits for `celery-task-meta-<id>` with a ready (or the given) state.
    static func result(
        _ client: RedisClient,
        _ id: String,
        state: String? = nil,
        timeout: Duration = .seconds(10)
    ) async throws -> JSONValue {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            // Redis may be restarting (connection refused, LOADING): keep polling until the deadline.
            if let reply = try? await client.send(RESPCommand("GET", "celery-task-meta-\(id)")),
                let bytes = reply.bytes
            {
                let meta = try JSONValue(parsing: Array(bytes.readableBytesView))
                let status = meta["status"]?.stringValue ?? ""
                if let state, status == state { return meta }
                if state == nil, ["SUCCESS", "FAILURE", "REVOKED"].contains(status) { return meta }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RedisError(.commandTimeout, "no result for \(id) within \(timeout)")
    }

    static func inUnacked(_ client: RedisClient, _ tag: String, key: String = "unacked") async throws -> Bool {
        try await client.send(RESPCommand("HEXISTS", key, tag)).int == 1
    }

    /// True once `tag` has left `unacked` (acks are batched, so they land shortly after the result).
    static func eventuallyAcked(_ client: RedisClient, _ tag: String, key: String = "unacked") async throws -> Bool {
        for _ in 0..<100 {
            if try await !inUnacked(client, tag, key: key) { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Waits until the worker has popped everything from `list`.
    static func waitUntilEmpty(_ client: RedisClient, _ list: String) async throws {
        for _ in 0..<500 {
            if try await client.send(RESPCommand("LLEN", list)).int == 0 { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("\(list) was not drained")
    }

    static func defaultRegistry() -> TaskRegistry {
        var registry = TaskRegistry()
        TaskCatalog.register(in: &registry)
        return registry
    }

    /// Runs a worker in this process for the duration of `body`, then stops it (warm shutdown) and waits.
    /// `client` (default: the test Redis) is its broker and backend, and what `body` gets.
    static func withWorker<R: Sendable>(
        _ configuration: WorkerConfiguration,
        registry: TaskRegistry = defaultRegistry(),
        client: RedisClient? = nil,
        _ body: (Worker, RedisClient) async throws -> R
    ) async throws -> R {
        // As `swift-celery worker` runs it: the connections on one event loop, and the fetch loop and the batcher on
        // it too.
        let client = try client ?? Self.client(eventLoopGroup: MultiThreadedEventLoopGroup.singleton.next())
        let worker = Worker(
            configuration: configuration,
            registry: registry,
            broker: client,
            backend: client,
            logger: logger
        )
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            let deadline = ContinuousClock.now + readyWithin
            while !worker.isReady && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            // A plain Bool: a failed expectation must not reflect the live worker (its state changes under it).
            let ready = worker.isReady
            #expect(ready, "the worker did not become ready within \(readyWithin)")
            do {
                let result = try await body(worker, client)
                worker.stop()
                try await group.waitForAll()
                return result
            } catch {
                worker.stop()
                try await group.waitForAll()
                throw error
            }
        }
    }
}
