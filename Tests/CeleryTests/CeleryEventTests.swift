import CeleryClient
import ExtrasBase64
import Foundation
import JSON
import Logging
import RESP
import Redis
import TestSupport
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

@Suite("Celery events: bodies and envelopes")
struct CeleryEventTests {
    let origin = CeleryEvent.Origin(hostname: "w1@vm", utcOffset: 0, pid: 6681)

    @Test("a worker-heartbeat body has Celery 5.7's keys in its order")
    func heartbeatBody() throws {
        let status = CeleryEvent.WorkerStatus(frequency: 2, active: 1, processed: 7, loadAverage: [1.32, 0.45, 0.17])
        let body = CeleryEvent.worker("heartbeat", status).body(origin: origin, clock: 2, timestamp: 1795316053.25)
        let object = try #require(body.objectValue)
        #expect(
            Array(object.keys) == [
                "hostname", "utcoffset", "pid", "clock", "freq", "active", "processed", "loadavg", "sw_ident",
                "sw_ver", "sw_sys", "timestamp", "type",
            ]
        )
        #expect(body["type"] == "worker-heartbeat")
        #expect(body["freq"] == .double(2))
        #expect(body["utcoffset"] == .double(0))
        #expect(body["clock"] == 2)
        #expect(body["active"] == 1)
        #expect(body["processed"] == 7)
        #expect(body["loadavg"] == [.double(1.32), .double(0.45), .double(0.17)])
        #expect(body["sw_ident"] == "swift-celery")
        #expect(CeleryEvent.worker("online", status).routingKey == "worker.online")
    }

    @Test("the envelope is kombu's fanout message for the celeryev exchange, body in base64")
    func envelope() throws {
        let body = CeleryEvent.taskStarted(id: "abc").body(origin: origin, clock: 5, timestamp: 10.5)
        let bytes = CeleryEvent.envelope(body: body, hostname: "w1@vm", routingKey: "task.started", deliveryTag: "t1")
        let envelope = try JSONValue(parsing: bytes)
        let keys = try #require(envelope.objectValue).keys
        #expect(Array(keys) == ["body", "content-encoding", "content-type", "headers", "properties"])
        #expect(envelope["headers"] == ["hostname": "w1@vm"])
        #expect(
            envelope["properties"]
                == [
                    "delivery_mode": 1,
                    "delivery_info": ["exchange": "celeryev", "routing_key": "task.started"],
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": "t1",
                ]
        )
        let decoded = try JSONValue(
            parsing: try Base64.decode(string: try #require(envelope["body"]?.stringValue))
        )
        #expect(decoded == body)
        #expect(decoded["uuid"] == "abc")
        #expect(decoded["type"] == "task-started")
    }

    @Test("task-received carries the repr of the arguments, ids, retries, eta and expires")
    func taskReceived() throws {
        let (id, _, bytes) = TestRedis.envelope(
            task: "tasks.add",
            args: [2, 3],
            queue: "q",
            extraHeaders: [
                "argsrepr": "(2, 3)", "retries": 1, "parent_id": "p1", "eta": "2026-11-22T05:58:09.721142+00:00",
            ]
        )
        let message = try TaskMessage(envelope: bytes)
        let fields = CeleryEvent.taskReceived(message).fields
        #expect(
            Array(fields.keys) == [
                "uuid", "name", "args", "kwargs", "root_id", "parent_id", "retries", "eta", "expires",
            ]
        )
        #expect(fields["uuid"] == .string(id))
        #expect(fields["name"] == "tasks.add")
        #expect(fields["args"] == "(2, 3)")
        #expect(fields["kwargs"] == "{}")
        #expect(fields["root_id"] == .string(id))
        #expect(fields["parent_id"] == "p1")
        #expect(fields["retries"] == 1)
        #expect(fields["eta"] == "2026-11-22T05:58:09.721142+00:00")
        #expect(fields["expires"] == .null)
    }

    @Test("task-received without argsrepr renders the arguments as Python would")
    func taskReceivedWithoutRepr() throws {
        let (_, _, bytes) = TestRedis.envelope(
            task: "tasks.echo",
            args: ["it's"],
            kwargs: ["n": 1],
            queue: "q",
            extraHeaders: ["argsrepr": nil, "kwargsrepr": nil]
        )
        let fields = CeleryEvent.taskReceived(try TaskMessage(envelope: bytes)).fields
        // Python's repr: double quotes around text with a single quote and no double quote.
        #expect(fields["args"] == "(\"it's\",)")
        #expect(fields["kwargs"] == "{'n': 1}")
    }

    @Test("outcome events: succeeded (result repr, runtime), failed, retried, revoked, rejected")
    func outcomes() {
        let succeeded = CeleryEvent.taskSucceeded(id: "a", result: ["x": 1], runtime: 0.25)
        #expect(succeeded.fields == ["uuid": "a", "result": "{'x': 1}", "runtime": .double(0.25)])
        #expect(succeeded.routingKey == "task.succeeded")
        let failed = CeleryEvent.taskFailed(id: "a", exception: "ValueError('boom')", traceback: "tb")
        #expect(failed.fields == ["uuid": "a", "exception": "ValueError('boom')", "traceback": "tb"])
        let retried = CeleryEvent.taskRetried(id: "a", exception: "RuntimeError('x')", traceback: nil)
        #expect(retried.type == "task-retried")
        #expect(retried.fields["traceback"] == .null)
        let revoked = CeleryEvent.taskRevoked(id: "a", terminated: false, signum: nil, expired: true)
        #expect(revoked.fields == ["uuid": "a", "terminated": false, "signum": nil, "expired": true])
        #expect(CeleryEvent.taskRejected(id: "a", requeue: false).fields == ["uuid": "a", "requeue": false])
    }

    @Test("hours west of UTC and load averages are plain numbers")
    func hostFacts() {
        let offset = EventDispatcher.hoursWestOfUTC()
        #expect(offset >= -14 && offset <= 12)
        #expect(offset != 0 || offset.sign == .plus)
        let load = EventDispatcher.loadAverage()
        #expect(load.count == 3)
        #expect(load.allSatisfy { $0 >= 0 && $0.isFinite })
    }
}

@Suite("Events on Redis", .enabled(if: TestRedis.available))
struct EventDispatcherRedisTests {
    /// Collects the decoded events of `hostname` published on `/0.celeryev/*` while `body` runs, up to its
    /// `worker-offline` (other tests' workers publish on the same channels).
    static func collect(
        _ client: RedisClient,
        hostname: String,
        timeout: Duration = .seconds(10),
        _ body: @escaping @Sendable () async throws -> Void
    ) async throws -> [(channel: String, envelope: JSONValue, body: JSONValue)] {
        try await client.withSubscription(patterns: ["/0.celeryev/*"]) { subscription in
            try await withThrowingTaskGroup(of: [(channel: String, envelope: JSONValue, body: JSONValue)]?.self) {
                group in
                group.addTask {
                    var seen: [(channel: String, envelope: JSONValue, body: JSONValue)] = []
                    for try await message in subscription.messages {
                        let envelope = try JSONValue(parsing: Array(message.payload.readableBytesView))
                        let decoded = try JSONValue(
                            parsing: try Base64.decode(string: envelope["body"]?.stringValue ?? "")
                        )
                        // task.multi carries a list of events, as Celery's worker sends them.
                        for body in decoded.arrayValue ?? [decoded] {
                            guard body["hostname"]?.stringValue == hostname else { continue }
                            seen.append((message.channel, envelope, body))
                            if body["type"] == "worker-offline" { return seen }
                        }
                    }
                    return seen
                }
                group.addTask {
                    try await body()
                    try await Task.sleep(for: timeout)
                    return nil
                }
                let first = try await group.next()!
                group.cancelAll()
                return try #require(first, "events did not arrive within \(timeout)")
            }
        }
    }

    /// Runs a worker on a redis-server of this test's own (its pattern subscriber sees no other test's traffic),
    /// then stops it (warm shutdown).
    static func withWorker(
        _ configuration: WorkerConfiguration,
        redis: OwnRedisServer,
        _ body: (Worker, RedisClient) async throws -> Void
    ) async throws {
        let client = RedisClient(configuration: try RedisConfiguration(url: redis.url), logger: TestRedis.logger)
        let worker = Worker(
            configuration: configuration,
            registry: TestRedis.defaultRegistry(),
            broker: client,
            backend: client,
            logger: TestRedis.logger
        )
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            let deadline = ContinuousClock.now + TestRedis.readyWithin
            while !worker.isReady && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(worker.isReady)
            do {
                try await body(worker, client)
            } catch {
                worker.stop()
                try await group.waitForAll()
                throw error
            }
            worker.stop()
            try await group.waitForAll()
        }
        await client.close()
    }

    static func types(_ bodies: [JSONValue], for id: String? = nil) -> [String] {
        bodies.filter { id == nil || $0["uuid"]?.stringValue == id }.compactMap { $0["type"]?.stringValue }
    }

    @Test("with -E a worker publishes online, heartbeats, each task's events and offline, the clock rising")
    func workerWithTaskEvents() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 2, hostname: "\(queue)@test")
        configuration.taskEvents = true
        configuration.heartbeatInterval = .milliseconds(200)
        let redis = try OwnRedisServer()
        try await redis.start()
        let client = RedisClient(configuration: try RedisConfiguration(url: redis.url), logger: TestRedis.logger)
        let add = TestRedis.envelope(task: "tasks.add", args: [2, 3], queue: queue)
        let fail = TestRedis.envelope(task: "tasks.fail", args: ["boom"], queue: queue)
        let expired = TestRedis.envelope(
            task: "tasks.add",
            args: [1, 1],
            queue: queue,
            extraHeaders: ["expires": "2001-01-01T00:00:00+00:00"]
        )
        let unknown = TestRedis.envelope(task: "tasks.nope", queue: queue)
        let undecodable: (id: String, tag: String, bytes: [UInt8]) = {
            let message = TestRedis.envelope(task: "tasks.add", queue: queue)
            var object = try! JSONValue(parsing: message.bytes).objectValue!
            object["body"] = "%%% not base64 %%%"
            return (message.id, message.tag, JSONValue.object(object).serialized())
        }()
        let hostname = configuration.hostname
        let events = try await Self.collect(
            client,
            hostname: hostname
        ) { [configuration, redis] in
            try await Self.withWorker(configuration, redis: redis) { worker, client in
                for message in [add, fail, expired, unknown, undecodable] {
                    try await TestRedis.push(client, queue, message.bytes)
                }
                for message in [add, fail, expired, unknown, undecodable] {
                    _ = try await TestRedis.result(client, message.id)
                }
                // Two heartbeats at least, then stop: worker-offline ends the collection.
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        let bodies = events.map(\.body)
        #expect(Self.types(bodies).first == "worker-online")
        #expect(Self.types(bodies).filter { $0 == "worker-heartbeat" }.count >= 2)
        #expect(Self.types(bodies, for: add.id) == ["task-received", "task-started", "task-succeeded"])
        #expect(Self.types(bodies, for: fail.id) == ["task-received", "task-started", "task-failed"])
        let succeeded = try #require(bodies.first { $0["type"] == "task-succeeded" })
        #expect(succeeded["result"] == "5")
        #expect((succeeded["runtime"]?.doubleValue ?? -1) >= 0)
        #expect(Self.types(bodies, for: expired.id) == ["task-received", "task-revoked"])
        let revoked = try #require(bodies.first { $0["type"] == "task-revoked" })
        #expect(revoked["expired"] == true)
        #expect(Self.types(bodies, for: unknown.id) == ["task-received", "task-failed"])
        let notRegistered = try #require(
            bodies.first { $0["uuid"]?.stringValue == unknown.id && $0["type"] == "task-failed" }
        )
        #expect(notRegistered["exception"] == "NotRegistered('tasks.nope')")
        #expect(Self.types(bodies, for: undecodable.id) == ["task-rejected"])
        let failed = try #require(bodies.first { $0["uuid"]?.stringValue == fail.id && $0["type"] == "task-failed" })
        #expect(failed["exception"]?.stringValue?.contains("boom") == true)
        #expect(failed["traceback"]?.stringValue?.contains("Traceback") == true)
        for event in events {
            #expect(
                event.channel == "/0.celeryev/"
                    + (event.envelope["properties"]?["delivery_info"]?["routing_key"]?.stringValue ?? "?")
            )
            #expect(event.body["hostname"] == .string(hostname))
            let isTaskEvent = event.body["type"]?.stringValue?.hasPrefix("task-") == true
            #expect(
                event.channel
                    == (isTaskEvent
                        ? "/0.celeryev/task.multi"
                        : "/0.celeryev/worker.\(event.body["type"]!.stringValue!.dropFirst(7))")
            )
        }
        let clocks = bodies.compactMap { $0["clock"]?.intValue }
        #expect(clocks == clocks.sorted() && Set(clocks).count == clocks.count)
        let offline = try #require(bodies.last)
        #expect(offline["processed"] == 2)
        #expect(offline["active"] == 0)
    }

    @Test("without -E only worker events go out; setEnabled turns task events on at run time")
    func taskEventsToggle() async throws {
        let queue = TestRedis.uniqueQueue()
        var configuration = WorkerConfiguration(queues: [queue], concurrency: 1, hostname: "\(queue)@test")
        configuration.heartbeatInterval = nil
        let redis = try OwnRedisServer()
        try await redis.start()
        let client = RedisClient(configuration: try RedisConfiguration(url: redis.url), logger: TestRedis.logger)
        let first = TestRedis.envelope(task: "tasks.add", args: [1, 1], queue: queue)
        let second = TestRedis.envelope(task: "tasks.add", args: [2, 2], queue: queue)
        let events = try await Self.collect(
            client,
            hostname: configuration.hostname
        ) { [configuration, redis] in
            try await Self.withWorker(configuration, redis: redis) { worker, client in
                #expect(!worker.events.taskEventsEnabled)
                try await TestRedis.push(client, queue, first.bytes)
                _ = try await TestRedis.result(client, first.id)
                worker.events.setEnabled(true)
                try await TestRedis.push(client, queue, second.bytes)
                _ = try await TestRedis.result(client, second.id)
                worker.events.sendHeartbeat()
                worker.events.taskRevoked(id: "revoked-id", terminated: true, signum: 15)
            }
        }
        let bodies = events.map(\.body)
        #expect(Self.types(bodies, for: first.id).isEmpty)
        #expect(Self.types(bodies, for: second.id) == ["task-received", "task-started", "task-succeeded"])
        #expect(Self.types(bodies).filter { $0 == "worker-heartbeat" }.count == 1)
        let revoked = try #require(bodies.first { $0["type"] == "task-revoked" })
        #expect(revoked["terminated"] == true)
        #expect(revoked["signum"] == 15)
    }
}
