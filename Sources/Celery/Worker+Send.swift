import CeleryProtocol
import JSON
import Synchronization

/// What ``TaskContext/send(_:)`` sent: the id of the result the canvas gives (a chain's last task, a chord's body, a
/// group's id) and that result as Celery's `AsyncResult.as_tuple()`, with the results it follows as its parents.
public struct SentCanvas: Sendable {
    /// The id to wait on for the canvas's result.
    public var id: String
    /// `[[id, parent], null]` for a task, `[[gid, parent], [members...]]` for a group: what a Python task that
    /// returns an `AsyncResult` stores, so a handler returns it as Celery's `build_chain_inside_task` does.
    public var resultTuple: JSONValue
}

extension TaskContext {
    /// Sends a task, chain, group or chord from the running task, as Celery's `sig.apply_async()` inside a task:
    /// the running task is its parent (and its root's root), every result id is fixed before anything is sent, and
    /// what goes out first (a chain's first task) joins this task's `children` when it succeeds. Outside a worker it
    /// throws.
    @discardableResult
    public func send(_ signature: JSONValue) async throws -> SentCanvas {
        guard let worker, let message else {
            throw PythonException.runtimeError("a canvas can be sent only from a task running on a worker")
        }
        return try await worker.send(signature, from: message)
    }

    /// ``send(_:)`` for one task's `Signature`.
    @discardableResult
    public func send(_ signature: Signature) async throws -> SentCanvas {
        try await send(signature.json)
    }
}

extension Worker {
    /// Freezes `signature` (every id fixed), publishes it with `message`'s task as parent, and records its result
    /// tuple as one of that task's children.
    package func send(_ signature: JSONValue, from message: TaskMessage) async throws -> SentCanvas {
        let frozen = Self.freeze(signature)
        guard let expansion = expand(frozen, prepending: nil, from: origin(of: message)), !expansion.tasks.isEmpty
        else {
            throw PythonException.valueError("cannot send this signature: \(signature.serializedString())")
        }
        try await publish(expansion.tasks, taskID: message.id, chordSizes: expansion.chordSizes)
        let tuple = Self.resultTuple(of: frozen)
        let child = Self.sentTuple(of: frozen)
        trails.withLock { $0[message.id, default: []].append(child) }
        return SentCanvas(id: tuple[0]?[0]?.stringValue ?? "", resultTuple: tuple)
    }

    /// The results a running task sent (``TaskContext/send(_:)``), removed: they go first in its `children`.
    package func takeTrail(of taskID: String) -> [JSONValue] {
        trails.withLock { $0.removeValue(forKey: taskID) } ?? []
    }

    /// Celery's `freeze()` over a signature dict: an id for every task, group and chord header that has none, so
    /// the result is known before it is sent (a chain's later steps are sent by other workers).
    package static func freeze(_ signature: JSONValue) -> JSONValue {
        func withID(_ signature: JSONValue) -> JSONValue {
            guard signature["options"]?["task_id"]?.stringValue == nil else { return signature }
            return Signature.setting("task_id", to: .string(OutgoingTask.newID()), in: signature)
        }
        switch signature["subtask_type"]?.stringValue ?? "" {
        case "chain":
            let steps = signatures(signature["kwargs"]?["tasks"]).map(freeze)
            return Signature.settingKwarg("tasks", to: .array(steps), in: signature)
        case "group":
            let members = signatures(signature["kwargs"]?["tasks"]).map(freeze)
            return withID(Signature.settingKwarg("tasks", to: .array(members), in: signature))
        case "chord":
            var header = signature["kwargs"]?["header"] ?? Canvas.group([])
            if header.arrayValue != nil { header = Canvas.group(signatures(header)) }
            let frozen = Signature.settingKwarg("header", to: freeze(header), in: signature)
            return Signature.settingKwarg("body", to: freeze(signature["kwargs"]?["body"] ?? .null), in: frozen)
        case "chunks":
            return freeze(BuiltinTasks.chunksGroup(of: signature))
        default:
            return withID(signature)
        }
    }

    /// The result Celery adds to the sending task's children: that of what is sent first (a chain's first step, a
    /// chord's header group), as its `apply_async` inside a task adds it.
    package static func sentTuple(of signature: JSONValue) -> JSONValue {
        switch signature["subtask_type"]?.stringValue ?? "" {
        case "chain":
            return signatures(signature["kwargs"]?["tasks"]).first.map(sentTuple) ?? .null
        case "chord":
            return resultTuple(of: signature["kwargs"]?["header"] ?? Canvas.group([]))
        default:
            return resultTuple(of: signature)
        }
    }

    /// Celery's `as_tuple()` of a frozen signature's result, `parent` being the result it follows: a task's
    /// `[[id, parent], null]`, a group's `[[gid, parent], [member...]]`, a chord's body with its header's group as
    /// parent, a chain's last step with each step before it as parent.
    package static func resultTuple(of signature: JSONValue, parent: JSONValue = .null) -> JSONValue {
        let id = JSONValue.string(signature["options"]?["task_id"]?.stringValue ?? "")
        switch signature["subtask_type"]?.stringValue ?? "" {
        case "chain":
            return signatures(signature["kwargs"]?["tasks"]).reduce(parent) { resultTuple(of: $1, parent: $0) }
        case "group":
            let members = signatures(signature["kwargs"]?["tasks"]).map { resultTuple(of: $0) }
            return [[id, parent], .array(members)]
        case "chord":
            let header = resultTuple(of: signature["kwargs"]?["header"] ?? Canvas.group([]), parent: parent)
            return resultTuple(of: signature["kwargs"]?["body"] ?? .null, parent: header)
        default:
            return [[id, parent], .null]
        }
    }
}
