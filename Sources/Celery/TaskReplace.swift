import CeleryProtocol
import JSON

/// Thrown by a handler to replace itself with a signature, chain, group or chord, as Celery's
/// `raise self.replace(sig)`: the replacement inherits the task's id, so a client waiting on the task gets the
/// replacement's final result.
///
/// ```swift
/// throw TaskReplace(Signature("tasks.add", args: [x, y]))
/// throw TaskReplace(Canvas.chain([Signature("tasks.add", args: [x, y]).json, Signature("tasks.identity").json]))
/// ```
/// As in Celery 5.7: a group becomes a chord with body `celery.accumulate` (the result is the list of the group's
/// results); the task's link callbacks and errbacks are linked onto the replacement (a chain's own links move to
/// its last task); the replacement's final task (a chord's body) takes the task's id, chord, group, group index
/// and root id, and `replaced_task_nesting` + 1; the rest of the task's chain follows the replacement. The
/// replaced task stores nothing and is acked. A signature already in a chord, or an empty chain, fails the task
/// with `ImproperlyConfigured`.
public struct TaskReplace: Error, Sendable {
    /// The replacement, as Celery's signature dict (`Signature.json` or a `Canvas` value).
    public var signature: JSONValue

    /// Replaces the task with a signature dict: a task, `celery.chain`, `celery.group` or `celery.chord`.
    public init(_ signature: JSONValue) {
        self.signature = signature
    }

    /// Replaces the task with one task.
    public init(_ signature: Signature) {
        self.signature = signature.json
    }
}

extension TaskContext {
    /// Replaces the running task with `signature` (Celery's `self.replace(sig)`); see ``TaskReplace``.
    public func replace(with signature: JSONValue) throws(TaskReplace) -> Never {
        throw TaskReplace(signature)
    }

    /// Replaces the running task with one task (Celery's `self.replace(sig)`); see ``TaskReplace``.
    public func replace(with signature: Signature) throws(TaskReplace) -> Never {
        throw TaskReplace(signature)
    }
}

/// `celery.exceptions.ImproperlyConfigured`, which Celery's `Task.replace` raises for a replacement it refuses.
package struct ImproperlyConfigured: PythonMappedError, Sendable {
    package var message: String
    package var pythonExceptionType: String { "ImproperlyConfigured" }
    package var pythonExceptionModule: String { "celery.exceptions" }
    package var pythonExceptionArguments: [JSONValue] { [.string(message)] }
}
