import JSON

/// How a task is sent: Celery's `apply_async` options that reach the wire.
public struct SendOptions: Sendable {
    /// When a task expires: relative to sending, or at a fixed time.
    public enum Expiry: Sendable, Hashable {
        case after(Duration)
        case at(CeleryTimestamp)
    }

    /// The task id; a fresh UUID when nil.
    public var taskID: String?
    /// The queue; the client's default queue when nil.
    public var queue: String?
    /// 0–9; on Redis 0 is the most urgent.
    public var priority: Int?
    /// Run no earlier than this long after sending (becomes `headers.eta`).
    public var countdown: Duration?
    /// Run no earlier than this time (`countdown` wins when both are set).
    public var eta: CeleryTimestamp?
    /// Discard the task (as REVOKED "expired") if it has not started by then.
    public var expires: Expiry?
    /// Custom message headers, merged in after Celery's own.
    public var headers: JSONObject
    /// `time_limit` in seconds (`headers.timelimit[0]`).
    public var timeLimit: Double?
    /// `soft_time_limit` in seconds (`headers.timelimit[1]`).
    public var softTimeLimit: Double?
    /// Ask the worker to store no result.
    public var ignoreResult: Bool
    /// Display name for logs and monitors (`headers.shadow`).
    public var shadow: String?
    /// Callbacks run with the result after success (`link`).
    public var link: [Signature]
    /// Errbacks run with the task id after failure (`link_error`).
    public var linkError: [Signature]

    public init(
        taskID: String? = nil,
        queue: String? = nil,
        priority: Int? = nil,
        countdown: Duration? = nil,
        eta: CeleryTimestamp? = nil,
        expires: Expiry? = nil,
        headers: JSONObject = [:],
        timeLimit: Double? = nil,
        softTimeLimit: Double? = nil,
        ignoreResult: Bool = false,
        shadow: String? = nil,
        link: [Signature] = [],
        linkError: [Signature] = []
    ) {
        self.taskID = taskID
        self.queue = queue
        self.priority = priority
        self.countdown = countdown
        self.eta = eta
        self.expires = expires
        self.headers = headers
        self.timeLimit = timeLimit
        self.softTimeLimit = softTimeLimit
        self.ignoreResult = ignoreResult
        self.shadow = shadow
        self.link = link
        self.linkError = linkError
    }

    /// The options as a Celery signature carries them (`sig.options`), which workers apply when they publish it.
    package var json: JSONObject {
        var object: JSONObject = [:]
        if let taskID { object["task_id"] = .string(taskID) }
        if let queue { object["queue"] = .string(queue) }
        if let priority { object["priority"] = .int(priority) }
        if let countdown { object["countdown"] = .double(countdown.seconds) }
        if let eta { object["eta"] = .string(eta.iso8601) }
        switch expires {
        case .after(let duration)?: object["expires"] = .double(duration.seconds)
        case .at(let time)?: object["expires"] = .string(time.iso8601)
        case nil: break
        }
        if !headers.isEmpty { object["headers"] = .object(headers) }
        if let timeLimit { object["time_limit"] = .double(timeLimit) }
        if let softTimeLimit { object["soft_time_limit"] = .double(softTimeLimit) }
        if ignoreResult { object["ignore_result"] = true }
        if let shadow { object["shadow"] = .string(shadow) }
        if !link.isEmpty { object["link"] = .array(link.map(\.json)) }
        if !linkError.isEmpty { object["link_error"] = .array(linkError.map(\.json)) }
        return object
    }
}

/// A task call to send later or to pass to a canvas: Celery's `tasks.add.s(2, 3)` (or `.si(...)` when immutable).
public struct Signature: Sendable {
    /// The registered task name.
    public var name: String
    public var args: [JSONValue]
    public var kwargs: JSONObject
    public var options: SendOptions
    /// An immutable signature does not get the previous task's result prepended in a chain, callback or chord.
    public var immutable: Bool

    public init(
        _ name: String,
        args: [JSONValue] = [],
        kwargs: JSONObject = [:],
        options: SendOptions = SendOptions(),
        immutable: Bool = false
    ) {
        self.name = name
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.immutable = immutable
    }

    /// The same signature, immutable (Celery's `.si`).
    public func asImmutable() -> Signature {
        var copy = self
        copy.immutable = true
        return copy
    }

    /// The same signature with its task id set.
    public func withID(_ id: String) -> Signature {
        var copy = self
        copy.options.taskID = id
        return copy
    }

    /// The signature as Celery serializes it in `embed` and in signature options.
    public var json: JSONValue {
        json(extraOptions: [:])
    }

    package func json(extraOptions: JSONObject) -> JSONValue {
        var options = self.options.json
        for (key, value) in extraOptions { options[key] = value }
        return [
            "task": .string(name), "args": .array(args), "kwargs": .object(kwargs), "options": .object(options),
            "subtask_type": nil, "immutable": .bool(immutable),
        ]
    }
}

extension Duration {
    /// The duration in seconds, with its fraction.
    package var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
