import CeleryProtocol
import JSON

/// The rest of Celery's `self.request`, read from the message the task came in (docs/protocol.md §2). Each is nil
/// (or empty) in a context made outside a worker, and where the message does not carry it.
extension TaskContext {
    /// The first task of the workflow (`request.root_id`); this task's own id when it started one.
    public var rootID: String? { message.map { $0.rootID ?? $0.id } }
    /// The task that sent this one (`request.parent_id`).
    public var parentID: String? { message?.parentID }
    /// The group this task belongs to (`request.group`).
    public var groupID: String? { message?.groupID }
    /// The task's place in its group (`request.group_index`).
    public var groupIndex: Int? { message?.headers["group_index"]?.intValue }
    /// The chord callback this task is a header part of (`request.chord`), as Celery's signature dict.
    public var chord: JSONValue? { Self.present(message?.embed["chord"]) }
    /// The link callbacks (`request.callbacks`), as signature dicts.
    public var callbacks: [JSONValue]? { Self.present(message?.embed["callbacks"])?.arrayValue }
    /// The link_error errbacks (`request.errbacks`), as signature dicts.
    public var errbacks: [JSONValue]? { Self.present(message?.embed["errbacks"])?.arrayValue }
    /// The rest of the chain after this task (`request.chain`), reversed as on the wire: the next task last.
    public var chain: [JSONValue]? { Self.present(message?.embed["chain"])?.arrayValue }
    /// When the task was due (`request.eta`); the header's text is `headers["eta"]`.
    public var eta: CeleryTimestamp? { message?.eta }
    /// When the task expires (`request.expires`).
    public var expires: CeleryTimestamp? { message?.expires }
    /// The node that sent the task (`request.origin`).
    public var origin: String? { message?.headers["origin"]?.stringValue }
    /// How many replacements led to this task (`request.replaced_task_nesting`): 0 for a task that replaced none.
    public var replacedTaskNesting: Int { message?.headers["replaced_task_nesting"]?.intValue ?? 0 }
    /// The hard time limit in force, in seconds (`request.time_limit`): the message's, else the handler's.
    public var timeLimit: Double? { limits.hard }
    /// The soft time limit in force, in seconds (`request.soft_time_limit`): the message's, else the handler's.
    public var softTimeLimit: Double? { limits.soft }
    /// The stamps of Celery's stamping API (`request.stamps`), when the message carries any.
    public var stamps: JSONObject? { message?.headers["stamps"]?.objectValue }
    /// The names of the stamped headers (`request.stamped_headers`).
    public var stampedHeaders: [String]? {
        message?.headers["stamped_headers"]?.arrayValue?.compactMap(\.stringValue)
    }
    /// The envelope's properties object (`request.properties`): `correlation_id`, `reply_to`, `delivery_info`,
    /// `priority`, and whatever else the sender set (`app_id`...). Parsed from the envelope when read.
    public var properties: JSONObject {
        guard let envelope = message?.rawEnvelope else { return [:] }
        return (try? JSONValue(parsing: envelope))?["properties"]?.objectValue ?? [:]
    }
    /// Where the result is expected (`request.reply_to`): the client's oid.
    public var replyTo: String? { Self.present(properties["reply_to"])?.stringValue }
    /// The message's `correlation_id` (`request.correlation_id`): the task id as the sender set it.
    public var correlationID: String? { Self.present(properties["correlation_id"])?.stringValue ?? message?.id }

    /// `value` unless it is absent or JSON null.
    private static func present(_ value: JSONValue?) -> JSONValue? {
        guard let value, !value.isNull else { return nil }
        return value
    }
}
