/// Task states as Celery names them.
public enum TaskState: String, Sendable {
    case pending = "PENDING"
    case received = "RECEIVED"
    case started = "STARTED"
    case success = "SUCCESS"
    case failure = "FAILURE"
    case retry = "RETRY"
    case revoked = "REVOKED"
    case rejected = "REJECTED"

    /// SUCCESS, FAILURE and REVOKED: the states that get a `date_done`.
    public var isReady: Bool { self == .success || self == .failure || self == .revoked }
}
