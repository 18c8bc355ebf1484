import CeleryClient
import Foundation
import JSON
import Logging
import NIOCore
import NIOPosix
import RESP
import Redis
import TestSupport
import Testing

@testable import Celery
@testable import CeleryCLI
@testable import CeleryProtocol
@testable import CeleryRedis

/// A plain HTTP/1.1 GET over a real socket: the status code and the body.
func httpGet(port: Int, _ path: String) async throws -> (status: Int, body: String) {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    let text = try await channel.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        var received = ByteBuffer()
        for try await var chunk in inbound { received.writeBuffer(&chunk) }
        return String(buffer: received)
    }
    let parts = text.components(separatedBy: "\r\n\r\n")
    let statusLine = parts.first?.components(separatedBy: "\r\n").first ?? ""
    let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
    return (status, parts.dropFirst().joined(separator: "\r\n\r\n"))
}

/// Prometheus text: `name{labels}` → value, for the samples (comments skipped).
func prometheusSamples(_ text: String) -> [String: Double] {
    var samples: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
            continue
        }
        samples[String(line[..<space])] = value
    }
    return samples
}

@Suite("Metrics and health endpoint", .enabled(if: TestRedis.available))
struct MonitoringServerTests {
    /// A worker with Prometheus metrics and its monitoring server on a free port, for the duration of `body`.
    static func withMonitoredWorker(
        redisURL: String? = nil,
        queue: String,
        _ body: (Worker, MonitoringServer, RedisClient) async throws -> Void
    ) async throws {
        let client = RedisClient(
            configuration: try RedisConfiguration(url: redisURL ?? TestRedis.url!),
            backoff: RedisBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)),
            logger: TestRedis.logger
        )
        let worker = Worker(
            configuration: WorkerConfiguration(queues: [queue], concurrency: 2, hostname: "\(queue)@test"),
            registry: TestRedis.defaultRegistry(),
            broker: client,
            backend: client,
            metrics: .prometheus(bootstrap: false),
            logger: TestRedis.logger
        )
        let server = MonitoringServer(
            host: "127.0.0.1",
            port: 0,
            worker: worker,
            connectionDeadline: .seconds(5),
            logger: TestRedis.logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            group.addTask { try await server.run() }
            let deadline = ContinuousClock.now + TestRedis.readyWithin
            while (!worker.isReady || server.boundPort == 0) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(worker.isReady && server.boundPort != 0)
            do {
                try await body(worker, server, client)
            } catch {
                worker.stop()
                group.cancelAll()
                throw error
            }
            worker.stop()
            group.cancelAll()
            try? await group.waitForAll()
        }
    }

    /// Polls `path` until its status is `status`.
    static func eventually(_ port: Int, _ path: String, status: Int, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let answer = try? await httpGet(port: port, path), answer.status == status { return true }
            try? await Task.sleep(for: .milliseconds(25))
        }
        return false
    }

    @Test("/metrics counts tasks per name, their runtime, queue length, prefetch and reconnects")
    func metricsScrape() async throws {
        let queue = TestRedis.uniqueQueue()
        try await Self.withMonitoredWorker(queue: queue) { worker, server, client in
            let before = prometheusSamples(try await httpGet(port: server.boundPort, "/metrics").body)
            #expect(before["celery_queue_length{queue=\"\(queue)\"}"] == 0)
            #expect(before["celery_redis_reconnects_total"] == 0)

            let add = TestRedis.envelope(task: "tasks.add", args: [2, 3], queue: queue)
            let fail = TestRedis.envelope(task: "tasks.fail", args: ["boom"], queue: queue)
            let retry = TestRedis.envelope(task: "tasks.flaky", args: [1], queue: queue)
            for message in [add, fail, retry] { try await TestRedis.push(client, queue, message.bytes) }
            _ = try await TestRedis.result(client, add.id)
            _ = try await TestRedis.result(client, fail.id)
            _ = try await TestRedis.result(client, retry.id, state: "SUCCESS")

            let (status, text) = try await httpGet(port: server.boundPort, "/metrics")
            #expect(status == 200)
            let samples = prometheusSamples(text)
            #expect(samples["celery_tasks_received_total{task=\"tasks.add\"}"] == 1)
            #expect(samples["celery_tasks_succeeded_total{task=\"tasks.add\"}"] == 1)
            #expect(samples["celery_tasks_failed_total{task=\"tasks.fail\"}"] == 1)
            #expect(samples["celery_tasks_retried_total{task=\"tasks.flaky\"}"] == 1)
            #expect(samples["celery_tasks_received_total{task=\"tasks.flaky\"}"] == 2)
            #expect(samples["celery_task_runtime_seconds_count{task=\"tasks.add\"}"] == 1)
            #expect(samples["celery_task_runtime_seconds_bucket{task=\"tasks.add\",le=\"+Inf\"}"] == 1)
            #expect(samples["celery_tasks_active"] == 0)
            #expect(samples["celery_prefetch_in_use"] != nil)
            #expect(text.contains("# TYPE celery_task_runtime_seconds histogram"))

            // Queue length is read at scrape time: stop consuming, push two, scrape.
            worker.stop()
            try await Task.sleep(for: .milliseconds(100))
            for _ in 0..<2 {
                try await TestRedis.push(client, queue, TestRedis.envelope(task: "tasks.add", queue: queue).bytes)
            }
            let after = prometheusSamples(try await httpGet(port: server.boundPort, "/metrics").body)
            #expect(after["celery_queue_length{queue=\"\(queue)\"}"] == 2)
            _ = try await client.send(RESPCommand("DEL", queue))
        }
    }

    @Test("/healthz: 200 while consuming, 503 while Redis is down, 200 again after, 503 once shutting down")
    func health() async throws {
        let redis = try OwnRedisServer()
        try await redis.start()
        let queue = TestRedis.uniqueQueue()
        try await Self.withMonitoredWorker(redisURL: redis.url, queue: queue) { worker, server, client in
            let port = server.boundPort
            #expect(try await httpGet(port: port, "/healthz").status == 200)
            #expect(try await httpGet(port: port, "/nothing").status == 404)

            redis.kill()
            #expect(await Self.eventually(port, "/healthz", status: 503))
            try await redis.start()
            #expect(await Self.eventually(port, "/healthz", status: 200))
            let samples = prometheusSamples(try await httpGet(port: port, "/metrics").body)
            #expect((samples["celery_redis_reconnects_total"] ?? 0) >= 1)

            worker.stop()
            #expect(try await httpGet(port: port, "/healthz").status == 503)
        }
    }

    @Test("a client that connects and sends nothing is disconnected after the connection deadline")
    func silentClient() async throws {
        try await Self.withMonitoredWorker(queue: TestRedis.uniqueQueue()) { _, server, _ in
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: server.boundPort) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            let started = ContinuousClock.now
            let received = try await channel.executeThenClose { inbound, _ in
                var count = 0
                for try await chunk in inbound { count += chunk.readableBytes }
                return count
            }
            #expect(received == 0)
            #expect(ContinuousClock.now - started < .seconds(9))
            #expect(try await httpGet(port: server.boundPort, "/healthz").status == 200)
        }
    }
}
