import CeleryProtocol
import JSON

/// Celery 5.7's `Task.replace` (celery/app/task.py): the handler threw ``TaskReplace``; the replacement is shaped
/// as Celery shapes it and published in place of the task, which then ends with nothing stored (`Ignore`).
extension Worker {
    /// Publishes the replacement of `message` and answers `.replaced`; a refused replacement (`ImproperlyConfigured`)
    /// or one that cannot be published fails the task instead.
    package func publishReplacement(of message: TaskMessage, _ request: TaskReplace) async -> TaskOutcome {
        let origin = origin(of: message)
        let steps: [JSONValue]
        do {
            steps = try Self.replacementSteps(request.signature, replacing: message)
        } catch {
            logger.error(
                "cannot replace the task: \(error.message)",
                metadata: ["celery.task.id": "\(message.id)", "celery.task.name": "\(message.taskName)"]
            )
            return .failed(StoredException(error), errbacks: true)
        }
        // The rest of the task's own chain follows the replacement; the chain on the wire is reversed.
        let nesting = Self.nesting(of: message) + 1
        let tail = (message.embed["chain"]?.arrayValue ?? []).map { Self.settingNesting(nesting, in: $0) }
        guard let first = steps.first,
            let expansion = expand(first, prepending: nil, from: origin, rest: tail + steps.dropFirst().reversed()),
            !expansion.tasks.isEmpty
        else {
            return .failed(
                StoredException(ImproperlyConfigured(message: "the replacement signature cannot be published")),
                errbacks: true
            )
        }
        do {
            try await publish(expansion.tasks, taskID: message.id, chordSizes: expansion.chordSizes)
        } catch {
            logger.error(
                "cannot publish the replacement; storing FAILURE",
                metadata: ["celery.task.id": "\(message.id)", "error": "\(error)"]
            )
            return .failed(StoredException(error), errbacks: false)
        }
        TaskContext.logger(logger, taskID: message.id, taskName: message.taskName).debug(
            "task replaced",
            metadata: ["celery.task.replacement": "\(expansion.tasks.map(\.name))"]
        )
        return .replaced
    }

    private static func nesting(of message: TaskMessage) -> Int {
        message.headers["replaced_task_nesting"]?.intValue ?? 0
    }

    /// The replacement as the steps of a chain, first step first, with Celery's changes made: a group (also as a
    /// chain's last step) becomes a chord with body `celery.accumulate(index=0)`, a group followed by a step a
    /// chord with that body; the task's callbacks and errbacks are linked on; the final step takes the task's id
    /// and its chord, group and group index; every step gets `replaced_task_nesting`.
    package static func replacementSteps(
        _ signature: JSONValue,
        replacing message: TaskMessage
    ) throws(ImproperlyConfigured) -> [JSONValue] {
        if let chord = signature["options"]?["chord"], !chord.isNull {
            throw ImproperlyConfigured(message: "A signature replacing a task must not be part of a chord")
        }
        var steps: [JSONValue]
        var chainLinks: [JSONValue] = []
        var chainErrbacks: [JSONValue] = []
        switch signature["subtask_type"]?.stringValue ?? "" {
        case "chain":
            steps = flattened(signatures(signature["kwargs"]?["tasks"]))
            chainLinks = list(signature["options"]?["link"])
            chainErrbacks = list(signature["options"]?["link_error"])
        default:
            steps = [signature]
        }
        guard !steps.isEmpty else { throw ImproperlyConfigured(message: "Cannot replace with an empty chain") }
        // group | step -> chord(group, step); a group at the end -> chord(group, accumulate).
        var shaped: [JSONValue] = []
        for step in steps {
            if let previous = shaped.last, previous["subtask_type"]?.stringValue == "group" {
                shaped[shaped.count - 1] = chord(of: previous, body: step)
            } else {
                shaped.append(step)
            }
        }
        if let last = shaped.last, last["subtask_type"]?.stringValue == "group" {
            shaped[shaped.count - 1] = chord(of: last, body: accumulate)
        }
        // The chain's own errbacks run for any step's failure, its links after the last step; then the task's
        // callbacks (after the final step) and errbacks (on every step: the replacement is one task to its caller).
        let errbacks = chainErrbacks + list(message.embed["errbacks"])
        let callbacks = chainLinks + list(message.embed["callbacks"])
        let nesting = nesting(of: message) + 1
        for index in shaped.indices {
            var step = linking(errbacks, as: "link_error", to: shaped[index])
            if index == shaped.count - 1 {
                step = linking(callbacks, as: "link", to: step)
                step = frozen(step, as: message)
            }
            shaped[index] = settingNesting(nesting, in: step)
        }
        return shaped
    }

    /// `celery.accumulate.s(index=0)`: returns the chord's list of results.
    private static let accumulate: JSONValue = Signature("celery.accumulate", kwargs: ["index": 0]).json

    private static func chord(of group: JSONValue, body: JSONValue) -> JSONValue {
        Canvas.chord(signatures(group["kwargs"]?["tasks"]), body: body, options: group["options"]?.objectValue ?? [:])
    }

    /// Nested chains spliced in place, as Celery's `prepare_steps` does.
    private static func flattened(_ steps: [JSONValue]) -> [JSONValue] {
        steps.flatMap { step in
            step["subtask_type"]?.stringValue == "chain" ? flattened(signatures(step["kwargs"]?["tasks"])) : [step]
        }
    }

    /// `link` / `link_error` on a step: a chord links its body (Celery's `chord.link`, and `link_error` with
    /// `task_allow_error_cb_on_chord_header` off).
    private static func linking(_ signatures: [JSONValue], as key: String, to step: JSONValue) -> JSONValue {
        guard !signatures.isEmpty else { return step }
        guard step["subtask_type"]?.stringValue == "chord", let body = step["kwargs"]?["body"] else {
            return Signature.appending(signatures, to: key, of: step)
        }
        return replacingBody(of: step, with: Signature.appending(signatures, to: key, of: body))
    }

    /// The final step takes the replaced task's id (unless it has one), chord, group and group index: a chord's
    /// body does, since it gives the chord's result.
    private static func frozen(_ step: JSONValue, as message: TaskMessage) -> JSONValue {
        if step["subtask_type"]?.stringValue == "chord", let body = step["kwargs"]?["body"] {
            return replacingBody(of: step, with: frozen(body, as: message))
        }
        var step = step
        if step["options"]?["task_id"]?.stringValue == nil {
            step = Signature.setting("task_id", to: .string(message.id), in: step)
        }
        if let chord = message.embed["chord"], !chord.isNull { step = Signature.setting("chord", to: chord, in: step) }
        if let group = message.groupID { step = Signature.setting("group_id", to: .string(group), in: step) }
        if let index = message.headers["group_index"], !index.isNull {
            step = Signature.setting("group_index", to: index, in: step)
        }
        return step
    }

    private static func replacingBody(of chord: JSONValue, with body: JSONValue) -> JSONValue {
        guard case .object(var object) = chord, case .object(var kwargs)? = object["kwargs"] else { return chord }
        kwargs["body"] = body
        object["kwargs"] = .object(kwargs)
        return .object(object)
    }

    /// `replaced_task_nesting` on a signature and, for a canvas, on every task in it.
    package static func settingNesting(_ nesting: Int, in signature: JSONValue) -> JSONValue {
        var signature = Signature.setting("replaced_task_nesting", to: .int(nesting), in: signature)
        guard case .object(var object) = signature, case .object(var kwargs)? = object["kwargs"] else {
            return signature
        }
        switch signature["subtask_type"]?.stringValue ?? "" {
        case "chain", "group":
            if case .array(let tasks)? = kwargs["tasks"] {
                kwargs["tasks"] = .array(tasks.map { settingNesting(nesting, in: $0) })
            }
        case "chord":
            if let header = kwargs["header"] { kwargs["header"] = settingNesting(nesting, in: header) }
            if let body = kwargs["body"] { kwargs["body"] = settingNesting(nesting, in: body) }
        default:
            return signature
        }
        object["kwargs"] = .object(kwargs)
        signature = .object(object)
        return signature
    }

    private static func list(_ value: JSONValue?) -> [JSONValue] {
        switch value {
        case .array(let items)?: return items
        case .object(let one)?: return [.object(one)]
        default: return []
        }
    }
}
