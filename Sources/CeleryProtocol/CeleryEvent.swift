import ExtrasBase64
import JSON

/// One monitoring event as a Celery 5.7 worker sends it (docs/protocol.md §4): its type, the fields of that type,
/// and the fields every event has, added when it is published.
package struct CeleryEvent: Sendable, Equatable {
    /// `task-succeeded`, `worker-heartbeat`, ...
    package var type: String
    /// The fields of this type, in the order Celery writes them (`uuid`, `result`, `runtime`, ...).
    package var fields: JSONObject

    /// The routing key: the type with `-` replaced by `.` (`task.succeeded`).
    package var routingKey: String { String(type.map { $0 == "-" ? "." : $0 }) }

    /// The fields every event has, the same for one worker's events.
    package struct Origin: Sendable, Equatable {
        /// The node name (`celery@host`).
        package var hostname: String
        /// Hours **west** of UTC (UTC+5:30 → -5.5).
        package var utcOffset: Double
        /// The worker's process id.
        package var pid: Int

        package init(hostname: String, utcOffset: Double, pid: Int) {
            self.hostname = hostname
            self.utcOffset = utcOffset
            self.pid = pid
        }
    }

    /// The event body as Celery orders it: hostname, utcoffset, pid, clock, the type's fields, timestamp, type.
    package func body(origin: Origin, clock: Int, timestamp: Double) -> JSONValue {
        var body: JSONObject = [
            "hostname": .string(origin.hostname),
            "utcoffset": .double(origin.utcOffset),
            "pid": .int(origin.pid),
            "clock": .int(clock),
        ]
        for (key, value) in fields { body[key] = value }
        body["timestamp"] = .double(timestamp)
        body["type"] = .string(type)
        return .object(body)
    }

    /// The kombu envelope published on `/{db}.celeryev/<routing key>`: a fanout message with delivery mode 1
    /// (transient) and the node name in its headers, byte for byte as a Python worker's.
    package static func envelope(body: JSONValue, hostname: String, routingKey: String, deliveryTag: String) -> [UInt8]
    {
        let envelope: JSONValue = [
            "body": .string(Base64.encodeToString(bytes: body.serialized())),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": ["hostname": .string(hostname)],
            "properties": [
                "delivery_mode": 1,
                "delivery_info": ["exchange": "celeryev", "routing_key": .string(routingKey)],
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": .string(deliveryTag),
            ],
        ]
        return envelope.serialized()
    }

    // MARK: - Task events

    /// `task-received`: the message was fetched (also an ETA message that now waits).
    package static func taskReceived(_ message: TaskMessage) -> CeleryEvent {
        CeleryEvent(
            type: "task-received",
            fields: [
                "uuid": .string(message.id),
                "name": .string(message.taskName),
                "args": .string(message.headers["argsrepr"]?.stringValue ?? PythonRepr.arguments(message.args)),
                "kwargs": .string(
                    message.headers["kwargsrepr"]?.stringValue ?? PythonRepr.render(.object(message.kwargs))
                ),
                "root_id": optional(message.rootID),
                "parent_id": optional(message.parentID),
                "retries": .int(message.retries),
                "eta": optional(message.headers["eta"]?.stringValue),
                "expires": optional(message.headers["expires"]?.stringValue),
            ]
        )
    }

    /// `task-started`.
    package static func taskStarted(id: String) -> CeleryEvent {
        CeleryEvent(type: "task-started", fields: ["uuid": .string(id)])
    }

    /// `task-succeeded`: the result as Python's `repr` would print it, the runtime in seconds.
    package static func taskSucceeded(id: String, result: JSONValue, runtime: Double) -> CeleryEvent {
        CeleryEvent(
            type: "task-succeeded",
            fields: ["uuid": .string(id), "result": .string(PythonRepr.render(result)), "runtime": .double(runtime)]
        )
    }

    /// `task-failed`: the exception's repr and the traceback text.
    package static func taskFailed(id: String, exception: String, traceback: String?) -> CeleryEvent {
        CeleryEvent(
            type: "task-failed",
            fields: ["uuid": .string(id), "exception": .string(exception), "traceback": optional(traceback)]
        )
    }

    /// `task-retried`: the exception that caused the retry.
    package static func taskRetried(id: String, exception: String, traceback: String?) -> CeleryEvent {
        CeleryEvent(
            type: "task-retried",
            fields: ["uuid": .string(id), "exception": .string(exception), "traceback": optional(traceback)]
        )
    }

    /// `task-revoked`: `expired` when it was discarded for its `expires`, `terminated`/`signum` when killed.
    package static func taskRevoked(id: String, terminated: Bool, signum: Int?, expired: Bool) -> CeleryEvent {
        CeleryEvent(
            type: "task-revoked",
            fields: [
                "uuid": .string(id),
                "terminated": .bool(terminated),
                "signum": signum.map { .int($0) } ?? .null,
                "expired": .bool(expired),
            ]
        )
    }

    /// `task-rejected`: the message was rejected, given back to its queue if `requeue`.
    package static func taskRejected(id: String, requeue: Bool) -> CeleryEvent {
        CeleryEvent(type: "task-rejected", fields: ["uuid": .string(id), "requeue": .bool(requeue)])
    }

    // MARK: - Worker events

    /// What a worker event says about the worker.
    package struct WorkerStatus: Sendable, Equatable {
        /// Seconds between heartbeats; a monitor thinks the worker gone after twice this without one.
        package var frequency: Double
        /// Tasks running now.
        package var active: Int
        /// Tasks started since the worker started.
        package var processed: Int
        /// The 1, 5 and 15 minute load averages.
        package var loadAverage: [Double]

        package init(frequency: Double, active: Int, processed: Int, loadAverage: [Double]) {
            self.frequency = frequency
            self.active = active
            self.processed = processed
            self.loadAverage = loadAverage
        }
    }

    /// What the worker says it is (Python sends `py-celery`, its version and `platform.system()`).
    package static let softwareIdentity = "swift-celery"
    package static let softwareVersion = "0.1.0"
    package static let softwareSystem: String = {
        #if os(Linux)
        return "Linux"
        #elseif os(macOS)
        return "Darwin"
        #else
        return "Unknown"
        #endif
    }()

    /// `worker-online`, `worker-heartbeat` or `worker-offline`.
    package static func worker(_ kind: String, _ status: WorkerStatus) -> CeleryEvent {
        CeleryEvent(
            type: "worker-\(kind)",
            fields: [
                "freq": .double(status.frequency),
                "active": .int(status.active),
                "processed": .int(status.processed),
                "loadavg": .array(status.loadAverage.map { .double($0) }),
                "sw_ident": .string(softwareIdentity),
                "sw_ver": .string(softwareVersion),
                "sw_sys": .string(softwareSystem),
            ]
        )
    }

    private static func optional(_ text: String?) -> JSONValue { text.map { .string($0) } ?? .null }
}
