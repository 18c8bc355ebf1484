import CeleryProtocol
import JSON

/// Thrown by a handler to reject its message, as Celery's `raise Reject(reason, requeue=...)`.
///
/// ```swift
/// throw TaskReject("malformed order", requeue: false)
/// ```
/// With `requeue: false` the task fails for good: FAILURE is stored with `celery.exceptions.Reject`, errbacks
/// run, `task-failed` is sent, and the message is acked. With `requeue: true` nothing is stored and, under
/// `--acks-late`, the message goes back to the end of its queue marked redelivered (`task-rejected`); a handler
/// that always rejects with requeue runs again and again, as in Celery. Under early ack the message was acked
/// before the handler ran, so it is not requeued (Celery: Reject has no effect without `acks_late`).
public struct TaskReject: Error, Sendable {
    /// Why the message was rejected: the exception's first argument.
    public var reason: String?
    /// True: back to its queue (acks-late only); false: the task fails and the message is dropped.
    public var requeue: Bool

    /// A rejection; `requeue` is false by default, as in Celery.
    public init(_ reason: String? = nil, requeue: Bool = false) {
        self.reason = reason
        self.requeue = requeue
    }
}

extension TaskReject: PythonMappedError {
    /// `celery.exceptions.Reject`.
    public var pythonExceptionType: String { "Reject" }
    /// `celery.exceptions`.
    public var pythonExceptionModule: String { "celery.exceptions" }
    /// `Reject(reason, requeue).args`: `[reason, requeue]`.
    public var pythonExceptionArguments: [JSONValue] { [reason.map(JSONValue.string) ?? .null, .bool(requeue)] }
}
