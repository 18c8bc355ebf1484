import Celery
import CeleryProtocol
import CeleryRedis
import ExtrasBase64
import JSON
import Logging
import NIOCore
import RESP
import Redis

/// The worker's per-task CPU path without Redis, for instruction and allocation counts (`Benchmarks/hotpath.sh`
/// runs it under valgrind): what a drain costs the worker apart from waiting and system calls.
///
/// Per task, as the worker does it: the pop script's reply is parsed (64 messages per reply) and each envelope
/// (the bytes kombu 5.7 LPUSHes for `send_task('tasks.add', [x, y])`) decoded into a `TaskMessage`; the handler
/// is looked up and run with the context the worker builds, in its own task as `TimeLimits.run` starts it; the
/// SUCCESS meta is made and serialized; per 64 tasks, the EVALSHA of the result script and the HDEL/ZREM of the
/// acks are encoded as the connection writes them.
package enum HotPathBenchmark {
    /// How far each task goes; each phase includes the ones before it, so a stage's cost is the difference.
    package enum Phase: String, Sendable, CaseIterable {
        /// Only make the inputs (the benchmark's own cost, to subtract).
        case inputs
        /// Parse the pop replies and decode the envelopes.
        case decode
        /// Also run the handlers and serialize the results.
        case run
        /// Also encode the result and ack commands: the whole path of a task through the worker.
        case all
    }

    /// What a run produced, so that none of it can be optimized away, and so tests can check it.
    package struct Report: Sendable {
        package var tasks: Int
        /// Sum of the handlers' results.
        package var resultSum: Int
        /// Bytes of result payloads serialized.
        package var payloadBytes: Int
        /// Bytes of RESP commands encoded.
        package var commandBytes: Int
        /// The last task's id, payload and the last batch's encoded result command.
        package var lastTaskID: String
        package var lastPayload: String
        package var lastCommand: [UInt8]
    }

    static let batch = 64

    /// The envelope kombu 5.7 writes for `app.send_task('tasks.add', [x, y])` (docs/protocol.md §1.1).
    package static func envelope(taskID: String, x: Int, y: Int, deliveryTag: String) -> [UInt8] {
        let body = #"[[\#(x), \#(y)], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
        let encoded = Base64.encodeToString(bytes: Array(body.utf8))
        let text = #"""
            {"body": "\#(encoded)", "content-encoding": "utf-8", "content-type": "application/json", \#
            "headers": {"lang": "py", "task": "tasks.add", "id": "\#(taskID)", "shadow": null, "eta": null, \#
            "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], \#
            "root_id": "\#(taskID)", "parent_id": null, "argsrepr": "[\#(x), \#(y)]", "kwargsrepr": "{}", \#
            "origin": "gen1@bench", "ignore_result": null, "replaced_task_nesting": 0, "stamped_headers": null, \#
            "stamps": {}}, "properties": {"correlation_id": "\#(taskID)", \#
            "reply_to": "1b0e7a4c-8f3d-3f1a-9a6e-2c5d4e6f7a8b", "delivery_mode": 2, \#
            "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", \#
            "delivery_tag": "\#(deliveryTag)"}}
            """#
        return Array(text.utf8)
    }

    /// The reply of `KombuBroker.popScript` for these envelopes, as RESP2 bytes.
    static func popReply(_ envelopes: [(envelope: [UInt8], tag: String)]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeString("*\(envelopes.count * 3)\r\n")
        for (envelope, tag) in envelopes {
            buffer.writeString("$6\r\ncelery\r\n$\(envelope.count)\r\n")
            buffer.writeBytes(envelope)
            buffer.writeString("\r\n$\(tag.utf8.count)\r\n\(tag)\r\n")
        }
        return buffer
    }

    /// Deterministic ids (UUID-shaped), so every run does the same work.
    static func id(_ n: Int, _ kind: Int) -> String {
        let hex = String(n, radix: 16)
        let padded = String(repeating: "0", count: max(0, 12 - hex.count)) + hex
        return "0000000\(kind)-0000-4000-8000-\(padded)"
    }

    /// Runs `tasks` tasks through `phase`.
    package static func run(tasks: Int, phase: Phase) async throws -> Report {
        var registry = TaskRegistry()
        registry.register("tasks.add", parameters: ["x", "y"]) { (_: TaskContext, x: Int, y: Int) in x + y }
        let backend = ResultBackend(expires: .seconds(86400), extended: false, hostname: "swift@bench")
        let logger = Logger(label: "hot-path", factory: { _ in SwiftLogNoOpLogHandler() })
        let redis = RedisClient(configuration: RedisConfiguration(), logger: logger)
        let layout = KombuLayout()
        var report = Report(
            tasks: tasks,
            resultSum: 0,
            payloadBytes: 0,
            commandBytes: 0,
            lastTaskID: "",
            lastPayload: "",
            lastCommand: []
        )

        // Inputs, made outside what is measured for the phase.
        var replies: [ByteBuffer] = []
        var start = 0
        while start < tasks {
            let count = min(batch, tasks - start)
            replies.append(
                popReply(
                    (start..<start + count).map { n in
                        let tag = id(n, 2)
                        return (envelope(taskID: id(n, 1), x: n, y: 1, deliveryTag: tag), tag)
                    }
                )
            )
            start += count
        }
        func decode(_ reply: ByteBuffer) throws -> [TaskMessage] {
            var buffer = reply
            guard let token = try RESPToken(consuming: &buffer) else { return [] }
            return try KombuBroker.deliveries(popReply: token).map { delivery in
                var message = try TaskMessage(envelope: delivery.envelope)
                if let tag = delivery.tag { message.deliveryTag = tag }
                return message
            }
        }
        func execute(_ message: TaskMessage) async throws -> (key: String, payload: String) {
            guard let task = registry[message.taskName] else { throw HotPathError.unregistered(message.taskName) }
            let context = TaskContext(message: message, hostname: "swift@bench", logger: logger, redis: redis)
            let arguments = TaskArguments(args: message.args, kwargs: message.kwargs)
            // As Worker.execute runs it: in a task of its own that `revoke --terminate` can stop waiting for.
            let result = try await TimeLimits.run(soft: nil, hard: nil, termination: TaskTermination()) {
                try await task.run(context, arguments)
            }
            report.resultSum += result.intValue ?? 0
            let meta = backend.meta(state: .success, result: result, message: message, taskID: message.id)
            let payload = WriteBatcher.payload(taskID: message.id, meta: meta)
            report.payloadBytes += payload.utf8.count
            report.lastTaskID = message.id
            report.lastPayload = payload
            return (ResultBackend.keyPrefix + message.id, payload)
        }
        func encode(_ results: [(key: String, payload: String)], acks: [String]) {
            // What WriteBatcher.flush sends when results and acks go to one Redis: the result script by SHA (any
            // 40 hex digits: only the bytes are counted), the acks among its arguments.
            let call = ResultBackend.storeCall(
                results: results,
                acks: acks,
                ttl: 86400,
                unackedKey: layout.unackedKey,
                unackedIndexKey: layout.unackedIndexKey
            )
            let store = RESPCommand(
                "EVALSHA",
                "c91d4b89cee6729f331aa2ae7c1ee73c597c3bb7",
                call.keys.count,
                call.keys,
                call.arguments
            )
            report.commandBytes += store.buffer.readableBytes
            report.lastCommand = Array(store.buffer.readableBytesView)
        }

        switch phase {
        case .inputs:
            report.payloadBytes = replies.reduce(0) { $0 + $1.readableBytes }
        case .decode:
            for reply in replies {
                let messages = try decode(reply)
                report.resultSum += messages.count
                report.lastTaskID = messages.last?.id ?? ""
            }
        case .run:
            let decoded = try replies.map(decode)
            for messages in decoded {
                for message in messages { _ = try await execute(message) }
            }
        case .all:
            for reply in replies {
                let messages = try decode(reply)
                var results: [(key: String, payload: String)] = []
                results.reserveCapacity(messages.count)
                for message in messages { results.append(try await execute(message)) }
                encode(results, acks: messages.map(\.deliveryTag))
            }
        }
        return report
    }

    enum HotPathError: Error {
        case unregistered(String)
    }
}
