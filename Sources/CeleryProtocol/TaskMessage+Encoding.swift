import ExtrasBase64
import JSON

/// A task to publish: everything Celery 5.7's `apply_async` puts on the wire (protocol v2, docs/protocol.md §1.1, §2.1–2.3).
///
/// `envelope()` gives the kombu envelope to `LPUSH` onto `list`. The worker uses this for canvas follow-ups
/// (link callbacks, chain hops, errbacks); a Swift client can use it to send tasks.
public struct OutgoingTask: Sendable {
    /// The registered task name (`headers.task`).
    public var name: String
    /// The task id (`headers.id`, `properties.correlation_id`).
    public var id: String
    public var args: [JSONValue]
    public var kwargs: JSONObject
    /// The queue (`delivery_info.routing_key`); with `priority` it picks the list.
    public var queue: String
    /// 0–9; on Redis 0 is the most urgent.
    public var priority: Int
    public var eta: CeleryTimestamp?
    public var expires: CeleryTimestamp?
    /// The task that published this one (`headers.parent_id`).
    public var parentID: String?
    /// The first task of the workflow (`headers.root_id`); this task's own id when nil.
    public var rootID: String?
    public var groupID: String?
    public var groupIndex: Int?
    public var retries: Int
    /// `headers.timelimit = [hard, soft]` in seconds.
    public var hardTimeLimit: Double?
    public var softTimeLimit: Double?
    public var shadow: String?
    public var ignoreResult: Bool
    /// The sender's node name (`headers.origin`).
    public var origin: String
    /// The client's oid (`properties.reply_to`); `""` when none.
    public var replyTo: String
    /// `embed.callbacks`: signatures to run with the result after success.
    public var callbacks: [JSONValue]?
    /// `embed.errbacks`: signatures to run with the task id after failure.
    public var errbacks: [JSONValue]?
    /// `embed.chain`: the rest of a chain, in reverse order (the next hop last).
    public var chain: [JSONValue]?
    /// `embed.chord`: the chord callback signature.
    public var chord: JSONValue?
    /// Custom headers, merged in after Celery's own (as `apply_async(headers=...)`).
    public var headers: JSONObject
    /// How many replacements led to this task (`headers.replaced_task_nesting`, Celery's `Task.replace`).
    public var replacedTaskNesting: Int = 0

    public init(
        name: String,
        id: String = OutgoingTask.newID(),
        args: [JSONValue] = [],
        kwargs: JSONObject = [:],
        queue: String = "celery",
        priority: Int = 0,
        origin: String = "swift-celery"
    ) {
        self.name = name
        self.id = id
        self.args = args
        self.kwargs = kwargs
        self.queue = queue
        self.priority = priority
        self.retries = 0
        self.ignoreResult = false
        self.origin = origin
        self.replyTo = ""
        self.headers = [:]
    }

    /// The Redis list this task goes to: the queue's list for the priority's step (docs/protocol.md §1.3).
    public var list: String { KombuPriorityLists.list(queue: queue, priority: priority) }

    /// The protocol v2 headers, in the order `apply_async` writes them, custom headers last.
    public var messageHeaders: JSONObject {
        var object: JSONObject = [
            "lang": "py",
            "task": .string(name),
            "id": .string(id),
            "shadow": Self.optional(shadow),
            "eta": Self.optional(eta?.iso8601),
            "expires": Self.optional(expires?.iso8601),
            "group": Self.optional(groupID),
            "group_index": groupIndex.map { .int($0) } ?? .null,
            "retries": .int(retries),
            "timelimit": [Self.number(hardTimeLimit), Self.number(softTimeLimit)],
            "root_id": .string(rootID ?? id),
            "parent_id": Self.optional(parentID),
            "argsrepr": .string(PythonRepr.arguments(args)),
            "kwargsrepr": .string(PythonRepr.render(.object(kwargs))),
            "origin": .string(origin),
            "ignore_result": .bool(ignoreResult),
            "replaced_task_nesting": .int(replacedTaskNesting),
            "stamped_headers": .null,
            "stamps": [:],
        ]
        // Stamps (`sig.stamp(visitor)`) replace the empty ones, as a stamped signature's options do in Python.
        for (key, value) in headers where object[key] == nil || key == "stamped_headers" || key == "stamps" {
            object[key] = value
        }
        return object
    }

    /// The body `[args, kwargs, embed]` as JSON.
    public var body: JSONValue {
        let embed: JSONValue = [
            "callbacks": callbacks.map { .array($0) } ?? .null,
            "errbacks": errbacks.map { .array($0) } ?? .null,
            "chain": chain.map { .array($0) } ?? .null,
            "chord": chord ?? .null,
        ]
        return [.array(args), .object(kwargs), embed]
    }

    /// The kombu envelope to `LPUSH` onto `list`, with a fresh delivery tag as kombu makes on every publish.
    public func envelope(deliveryTag: String = OutgoingTask.newID(), now: CeleryTimestamp = .now()) -> [UInt8] {
        envelope(headers: messageHeaders, deliveryTag: deliveryTag, now: now)
    }

    /// The kombu envelope with the given protocol v2 headers (for senders whose headers differ from
    /// `apply_async`'s, such as beat's `send_task`-style messages).
    package func envelope(headers: JSONObject, deliveryTag: String, now: CeleryTimestamp) -> [UInt8] {
        var properties: JSONObject = [
            "correlation_id": .string(id),
            "reply_to": .string(replyTo),
            "delivery_mode": 2,
        ]
        if let expires {
            // A string of milliseconds, "0" when already past (kombu's expiration property).
            let milliseconds = max(0, (expires.secondsSince1970 - now.secondsSince1970) * 1000)
            properties["expiration"] = .string(String(Int(milliseconds.rounded())))
        }
        properties["delivery_info"] = ["exchange": "", "routing_key": .string(queue)]
        properties["priority"] = .int(priority)
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = .string(deliveryTag)
        let envelope: JSONValue = [
            "body": .string(Base64.encodeToString(bytes: body.serialized())),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": .object(headers),
            "properties": .object(properties),
        ]
        return envelope.serialized()
    }

    /// A random lowercase UUID4 string, as Python's `str(uuid.uuid4())`.
    public static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = (bytes[6] & 0x0f) | 0x40
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if [4, 6, 8, 10].contains(index) { text.append(UInt8(ascii: "-")) }
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    private static func optional(_ string: String?) -> JSONValue {
        string.map { .string($0) } ?? .null
    }

    /// Seconds as Python would send them: an int when integral.
    private static func number(_ value: Double?) -> JSONValue {
        guard let value else { return .null }
        if value.rounded() == value, abs(value) < 1e15 { return .int(Int(value)) }
        return .double(value)
    }
}

/// A Python-repr-like rendering of JSON values, for `argsrepr` and `kwargsrepr` (display only).
package enum PythonRepr {
    /// `(2, 3)`, `(1,)`, `()`: args as a Python tuple.
    package static func arguments(_ args: [JSONValue]) -> String {
        let items = args.map(render)
        return items.count == 1 ? "(\(items[0]),)" : "(\(items.joined(separator: ", ")))"
    }

    package static func render(_ value: JSONValue) -> String {
        switch value {
        case .null: return "None"
        case .bool(let flag): return flag ? "True" : "False"
        case .int(let number): return String(number)
        case .double(let number): return number.description
        case .string(let text): return quote(text)
        case .array(let items): return "[" + items.map(render).joined(separator: ", ") + "]"
        case .object(let members):
            return "{" + members.map { "\(quote($0.key)): \(render($0.value))" }.joined(separator: ", ") + "}"
        }
    }

    /// Python's choice: single quotes, unless the text has a single quote and no double quote.
    private static func quote(_ text: String) -> String {
        let mark: Unicode.Scalar = text.contains("'") && !text.contains("\"") ? "\"" : "'"
        var out = String(mark)
        for character in text.unicodeScalars {
            switch character {
            case mark: out += "\\" + String(mark)
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(character)
            }
        }
        return out + String(mark)
    }
}
