import CeleryProtocol
import CeleryRedis
import JSON
import RESP

extension TaskContext {
    /// Adds `signature` (a task, chain, group or chord dict) to the chord this task is a header part of, as
    /// Celery's `self.add_to_chord(sig)`: the chord then waits for its result too, and the body gets it in its
    /// list. Returns the id whose result the chord waits for. Throws `ValueError` when the task is in no chord.
    @discardableResult
    public func addToChord(_ signature: JSONValue) async throws -> String {
        guard let worker, let message else {
            throw PythonException.valueError("Current task is not member of any chord")
        }
        return try await worker.addToChord(signature, from: message)
    }

    /// `addToChord` for a `Signature`.
    @discardableResult
    public func addToChord(_ signature: Signature) async throws -> String {
        try await addToChord(signature.json)
    }
}

extension Worker {
    /// Celery's `Task.add_to_chord` on Redis (celery/app/task.py, backends/redis.py `add_to_chord`): the signature
    /// takes the task's group, group index, chord and root id, the chord's `.t` counter goes up by one (one more
    /// part to wait for), then the signature is sent with this task as its parent.
    package func addToChord(_ signature: JSONValue, from message: TaskMessage) async throws -> String {
        guard case .object? = message.embed["chord"], let groupID = message.groupID else {
            throw PythonException.valueError("Current task is not member of any chord")
        }
        var options: JSONObject = [
            "group_id": .string(groupID), "chord": message.embed["chord"] ?? .null,
            "root_id": .string(message.rootID ?? message.id),
        ]
        if let index = message.headers["group_index"], !index.isNull { options["group_index"] = index }
        let added = Canvas.setting(options, on: signature)
        guard let expansion = expand(added, prepending: nil, from: origin(of: message)), !expansion.tasks.isEmpty,
            case .string(let id)? = expansion.child[0]?[0]
        else {
            throw PythonException.valueError("cannot add this signature to the chord: \(signature)")
        }
        _ = try await backendClient.send(RESPCommand("INCR", RedisChord(groupID: groupID).totalDiffKey))
        try await publish(expansion.tasks, taskID: message.id, chordSizes: expansion.chordSizes)
        return id
    }
}
