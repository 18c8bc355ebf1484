import CeleryProtocol
import CeleryRedis
import JSON

/// Thrown by a handler to run the task again later, as Celery's `self.retry()`: a new message with the same id,
/// `retries + 1` and an ETA goes on the queue, RETRY is stored, and this attempt is acked.
///
/// ```swift
/// throw TaskRetry(countdown: .seconds(5), maxRetries: 3, cause: error)
/// ```
/// Past `maxRetries` the task fails with `cause` (or `MaxRetriesExceededError` when there is none). The next
/// attempt keeps the message's custom headers, as Celery's retry does.
public struct TaskRetry: Error, Sendable {
    /// Delay before the next attempt; Celery's `default_retry_delay` (180 s) when neither this nor `eta` is set.
    public var countdown: Duration?
    /// When the next attempt may run (wins over `countdown`).
    public var eta: CeleryTimestamp?
    /// How many retries are allowed in all; nil retries forever. Celery's default is 3.
    public var maxRetries: Int?
    /// The error that made the task retry: stored with RETRY, and as the failure once retries run out.
    public var cause: (any Error & Sendable)?
    /// The next attempt's positional arguments (Celery's `retry(args=...)`); nil keeps the message's.
    public var args: [JSONValue]?
    /// The next attempt's keyword arguments (Celery's `retry(kwargs=...)`); nil keeps the message's.
    public var kwargs: JSONObject?

    /// A retry request; `args` and `kwargs` replace the message's arguments for the next attempt when given.
    public init(
        countdown: Duration? = nil,
        eta: CeleryTimestamp? = nil,
        maxRetries: Int? = 3,
        cause: (any Error & Sendable)? = nil,
        args: [JSONValue]? = nil,
        kwargs: JSONObject? = nil
    ) {
        self.countdown = countdown
        self.eta = eta
        self.maxRetries = maxRetries
        self.cause = cause
        self.args = args
        self.kwargs = kwargs
    }
}

/// Carries a thrown error as a retry's cause, keeping the Python name it maps to.
package struct ErrorCause: PythonMappedError, Sendable {
    package let pythonExceptionType: String
    package let pythonExceptionModule: String
    package let pythonExceptionArguments: [JSONValue]

    package init(_ error: any Error) {
        let stored = StoredException(error)
        pythonExceptionType = stored.type
        pythonExceptionModule = stored.module
        pythonExceptionArguments = stored.arguments
    }
}
