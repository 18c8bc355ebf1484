import Foundation
import JSON
import Logging
import Redis
import Synchronization

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// One write a worker made, in the order it made them.
enum RecordedWrite: Equatable, CustomStringConvertible {
    /// `celery-task-meta-<id>` with this status.
    case result(String, status: String)
    case ack(String)
    /// Follow-up tasks sent in one transaction, by name.
    case published([String])

    var description: String {
        switch self {
        case .result(let id, let status): "result(\(id), \(status))"
        case .ack(let tag): "ack(\(tag))"
        case .published(let names): "published(\(names.joined(separator: ",")))"
        }
    }
}

/// The writes of an in-memory result store and publisher, shared so their order can be checked.
final class WriteLog: Sendable {
    private let writes = Mutex<[RecordedWrite]>([])
    private let metas = Mutex<[String: JSONValue]>([:])
    private let sent = Mutex<[OutgoingTask]>([])

    var all: [RecordedWrite] { writes.withLock { $0 } }
    func meta(_ id: String) -> JSONValue? { metas.withLock { $0[id] } }
    var published: [OutgoingTask] { sent.withLock { $0 } }

    func storeResult(taskID: String, meta: JSONValue) {
        metas.withLock { $0[taskID] = meta }
        writes.withLock { $0.append(.result(taskID, status: meta["status"]?.stringValue ?? "?")) }
    }

    func ack(_ tag: String) { writes.withLock { $0.append(.ack(tag)) } }

    func publish(_ tasks: [OutgoingTask]) {
        sent.withLock { $0 += tasks }
        writes.withLock { $0.append(.published(tasks.map(\.name))) }
    }
}

/// A result store that keeps every write in memory, in order; acks also reach the in-memory broker, if any.
struct InMemoryResultStore: ResultStore {
    let log: WriteLog
    var broker: InMemoryBroker? = nil
    var resultTTL: Int { 86_400 }
    func storeResult(taskID: String, meta: JSONValue) { log.storeResult(taskID: taskID, meta: meta) }
    func ack(deliveryTag: String) {
        log.ack(deliveryTag)
        broker?.ack(deliveryTag)
    }
}

/// A publisher that keeps what it was asked to send, or fails as an unreachable broker does.
struct InMemoryPublisher: TaskPublisher {
    let log: WriteLog
    var failing = false
    func publish(_ tasks: [OutgoingTask]) async throws(RedisError) {
        guard !failing else { throw RedisError(.connectionRefused, "the in-memory broker refuses") }
        log.publish(tasks)
    }
}

/// A worker whose results, acks and follow-ups go to memory. It is never run: tests hand it decoded messages
/// through `execute`, as an executor does; nothing reaches Redis (its client points at a closed port).
struct InMemoryWorker {
    let worker: Worker
    let log: WriteLog

    let broker: InMemoryBroker
    /// The worker's expected error lines (failures the tests cause) stay out of the test output.
    static let quietLogger = Logger(label: "in-memory", factory: { _ in SwiftLogNoOpLogHandler() })

    init(registry: TaskRegistry, acksLate: Bool, failingPublisher: Bool = false) throws {
        try self.init(
            registry: registry,
            configuration: WorkerConfiguration(
                queues: ["q"],
                concurrency: 1,
                hostname: "memory@test",
                acksLate: acksLate
            ),
            failingPublisher: failingPublisher
        )
    }

    /// A worker that can also run (`worker.run()`): its queues are an in-memory broker, it polls them (no
    /// BLMOVE watchers), and it has no remote control and no heartbeats.
    init(registry: TaskRegistry, configuration: WorkerConfiguration, failingPublisher: Bool = false) throws {
        let log = WriteLog()
        let broker = InMemoryBroker()
        let client = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:1/0"),
            logger: Self.quietLogger
        )
        var configuration = configuration
        configuration.idleFetch = .poll
        configuration.remoteControl = false
        configuration.heartbeatInterval = nil
        self.worker = Worker(
            configuration: configuration,
            registry: registry,
            broker: client,
            backend: client,
            results: InMemoryResultStore(log: log, broker: broker),
            publisher: InMemoryPublisher(log: log, failing: failingPublisher),
            queues: broker,
            logger: Self.quietLogger
        )
        self.log = log
        self.broker = broker
    }

    /// A task message as Celery 5.7 sends it, with the given canvas in its embed and extra headers.
    static func message(
        _ task: String,
        id: String = UUID().uuidString.lowercased(),
        args: [JSONValue] = [],
        callbacks: [JSONValue]? = nil,
        errbacks: [JSONValue]? = nil,
        chain: [JSONValue]? = nil,
        headers: JSONObject = [:]
    ) throws -> TaskMessage {
        try TaskMessage(
            envelope: envelope(
                task,
                id: id,
                args: args,
                callbacks: callbacks,
                errbacks: errbacks,
                chain: chain,
                headers: headers
            )
        )
    }

    /// The envelope of `message(...)`, as a client LPUSHes it; its delivery tag is `tag-<id>`.
    static func envelope(
        _ task: String,
        id: String = UUID().uuidString.lowercased(),
        args: [JSONValue] = [],
        callbacks: [JSONValue]? = nil,
        errbacks: [JSONValue]? = nil,
        chain: [JSONValue]? = nil,
        headers: JSONObject = [:]
    ) -> [UInt8] {
        let body: JSONValue = [
            .array(args), [:],
            [
                "callbacks": callbacks.map(JSONValue.array) ?? .null,
                "errbacks": errbacks.map(JSONValue.array) ?? .null,
                "chain": chain.map(JSONValue.array) ?? .null, "chord": nil,
            ],
        ]
        var allHeaders: JSONObject = [
            "lang": "py", "task": .string(task), "id": .string(id), "shadow": nil, "eta": nil, "expires": nil,
            "group": nil, "group_index": nil, "retries": 0, "timelimit": [nil, nil], "root_id": .string(id),
            "parent_id": nil, "argsrepr": "()", "kwargsrepr": "{}", "origin": "test@host", "ignore_result": false,
        ]
        for (key, value) in headers { allHeaders[key] = value }
        let envelope: JSONValue = [
            "body": .string(Data(body.serialized()).base64EncodedString()),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": .object(allHeaders),
            "properties": [
                "correlation_id": .string(id), "reply_to": "", "delivery_mode": 2,
                "delivery_info": ["exchange": "", "routing_key": "q"], "priority": 0,
                "body_encoding": "base64", "delivery_tag": .string("tag-\(id)"),
            ],
        ]
        return envelope.serialized()
    }

    /// A signature as Python's `sig.set(task_id=...)` serializes it.
    static func signature(_ task: String, id: String, args: [JSONValue] = []) -> JSONValue {
        [
            "task": .string(task), "args": .array(args), "kwargs": [:],
            "options": ["task_id": .string(id)], "subtask_type": nil, "immutable": false,
        ]
    }
}
