import CeleryProtocol
import JSON

/// One periodic task: what to send, where, and when.
public struct BeatEntry: Sendable, Hashable {
    /// When `expires` is given: seconds after sending, or a fixed instant.
    public enum Expiry: Sendable, Hashable {
        case after(seconds: Double)
        case at(CeleryTimestamp)
    }

    /// The entry's unique name (the key of its state in Redis).
    public var name: String
    /// The task name; not checked against any registry (it may be a Python task).
    public var task: String
    public var schedule: BeatSchedule
    public var args: [JSONValue] = []
    public var kwargs: JSONObject = [:]
    /// `options.queue` (default `celery`).
    public var queue: String = "celery"
    /// `options.priority`, 0–9 (0 most urgent on Redis).
    public var priority: Int?
    /// `options.expires`.
    public var expires: Expiry?
    /// `options.headers`: merged into the message headers.
    public var headers: JSONObject = [:]
    /// `options.time_limit` and `options.soft_time_limit` in seconds.
    public var timeLimit: Double?
    public var softTimeLimit: Double?
    /// A disabled entry stays in the file but does not run.
    public var enabled = true

    /// Creates an entry.
    public init(name: String, task: String, schedule: BeatSchedule) {
        self.name = name
        self.task = task
        self.schedule = schedule
    }

    /// The message Celery beat would send for this entry at `now`: a `send_task`-style protocol v2 message.
    public func message(
        origin: String,
        replyTo: String,
        id: String = OutgoingTask.newID(),
        now: CeleryTimestamp
    )
        -> OutgoingTask
    {
        var task = OutgoingTask(name: self.task, id: id, args: args, kwargs: kwargs, queue: queue, origin: origin)
        task.priority = priority ?? 0
        task.replyTo = replyTo
        task.headers = headers
        task.hardTimeLimit = timeLimit
        task.softTimeLimit = softTimeLimit
        switch expires {
        case .after(let seconds): task.expires = CeleryTimestamp(secondsSince1970: now.secondsSince1970 + seconds)
        case .at(let instant): task.expires = instant
        case nil: break
        }
        return task
    }

    /// A JSON description of the entry (stored in Redis for operators; Redis keeps no other copy of the file).
    public var definition: JSONValue {
        var options: JSONObject = ["queue": .string(queue)]
        if let priority { options["priority"] = .int(priority) }
        switch expires {
        case .after(let seconds): options["expires"] = .double(seconds)
        case .at(let instant): options["expires"] = .string(instant.iso8601)
        case nil: break
        }
        if !headers.isEmpty { options["headers"] = .object(headers) }
        if let timeLimit { options["time_limit"] = .double(timeLimit) }
        if let softTimeLimit { options["soft_time_limit"] = .double(softTimeLimit) }
        return [
            "name": .string(name),
            "task": .string(task),
            "schedule": .string(schedule.description),
            "args": .array(args),
            "kwargs": .object(kwargs),
            "options": .object(options),
            "enabled": .bool(enabled),
        ]
    }
}
