import ExtrasBase64
import JSON

/// A remote-control request broadcast by `celery inspect` / `celery control` on the `celery.pidbox` fanout
/// exchange (docs/protocol.md §5): kombu's envelope whose body is `{"method", "arguments", "destination", "pattern",
/// "matcher", "ticket", "reply_to"}`.
package struct ControlRequest: Sendable {
    /// Where the answer goes: LPUSHed to the queue bound to `exchange` with `routingKey`.
    package struct ReplyAddress: Sendable, Hashable {
        package var exchange: String
        package var routingKey: String
    }

    package var method: String
    package var arguments: JSONObject
    /// Node names the request is for; nil or empty: every node (unless a pattern says otherwise).
    package var destination: [String]?
    package var pattern: String?
    /// `glob` or `pcre`.
    package var matcher: String?
    /// Set on calls that want replies; copied into the reply's headers.
    package var ticket: String?
    package var replyTo: ReplyAddress?
    /// The sender's Lamport clock (`headers.clock`).
    package var clock: Int?

    /// Why a published message is not a control request.
    package struct DecodeError: Error, Sendable, CustomStringConvertible {
        package var description: String
    }

    package init(
        method: String,
        arguments: JSONObject = [:],
        destination: [String]? = nil,
        pattern: String? = nil,
        matcher: String? = nil,
        ticket: String? = nil,
        replyTo: ReplyAddress? = nil,
        clock: Int? = nil
    ) {
        self.method = method
        self.arguments = arguments
        self.destination = destination
        self.pattern = pattern
        self.matcher = matcher
        self.ticket = ticket
        self.replyTo = replyTo
        self.clock = clock
    }

    /// Decodes the envelope published on `/<db>.celery.pidbox`.
    package init(envelope bytes: [UInt8]) throws(DecodeError) {
        guard let envelope = try? JSONValue(parsing: bytes), let object = envelope.objectValue else {
            throw DecodeError(description: "the envelope is not a JSON object")
        }
        let contentType = object["content-type"]?.stringValue ?? "application/json"
        guard contentType == "application/json" else {
            throw DecodeError(description: "content type \(contentType) is not accepted (json only)")
        }
        guard let text = object["body"]?.stringValue else {
            throw DecodeError(description: "the envelope has no body string")
        }
        let bodyBytes: [UInt8]
        switch object["properties"]?["body_encoding"]?.stringValue {
        case "base64":
            guard let decoded = try? Base64.decode(string: text) else {
                throw DecodeError(description: "the body is not valid base64")
            }
            bodyBytes = decoded
        case nil, "utf-8", "utf8":
            bodyBytes = Array(text.utf8)
        case let other?:
            throw DecodeError(description: "unknown body_encoding \(other)")
        }
        guard let body = (try? JSONValue(parsing: bodyBytes))?.objectValue else {
            throw DecodeError(description: "the body is not a JSON object")
        }
        guard let method = body["method"]?.stringValue, !method.isEmpty else {
            throw DecodeError(description: "the request names no method")
        }
        self.method = method
        switch body["arguments"] {
        case .object(let arguments)?: self.arguments = arguments
        case nil, .null?: self.arguments = [:]
        default: throw DecodeError(description: "arguments must be an object")
        }
        switch body["destination"] {
        case .array(let names)?: destination = names.compactMap(\.stringValue)
        case .string(let name)?: destination = [name]
        default: destination = nil
        }
        pattern = body["pattern"]?.stringValue
        matcher = body["matcher"]?.stringValue
        ticket = body["ticket"]?.stringValue
        if let reply = body["reply_to"]?.objectValue, let routingKey = reply["routing_key"]?.stringValue {
            replyTo = ReplyAddress(exchange: reply["exchange"]?.stringValue ?? "", routingKey: routingKey)
        } else {
            replyTo = nil
        }
        clock = object["headers"]?["clock"]?.intValue
    }

    /// kombu's filter: the destination list if it is non-empty, else the pattern with its matcher, else everyone.
    package func isAddressed(to hostname: String) -> Bool {
        if let destination, !destination.isEmpty { return destination.contains(hostname) }
        if let pattern, let matcher, !pattern.isEmpty {
            switch matcher {
            case "glob": return Glob.matches(hostname, pattern: pattern)
            case "pcre":
                guard let regex = try? Regex(pattern) else { return false }
                return (try? regex.prefixMatch(in: hostname)) != nil
            default: return false
            }
        }
        return true
    }
}

/// Python's `fnmatch`: `*`, `?` and `[...]` classes (`[!...]` negated).
package enum Glob {
    package static func matches(_ text: String, pattern: String) -> Bool {
        matches(Array(text), 0, Array(pattern), 0)
    }

    private static func matches(_ text: [Character], _ t: Int, _ pattern: [Character], _ p: Int) -> Bool {
        var t = t
        var p = p
        while p < pattern.count {
            switch pattern[p] {
            case "*":
                if p + 1 == pattern.count { return true }
                for start in t...text.count where matches(text, start, pattern, p + 1) { return true }
                return false
            case "?":
                guard t < text.count else { return false }
                t += 1
                p += 1
            case "[":
                guard t < text.count, let end = pattern[(p + 1)...].firstIndex(of: "]"), end > p + 1 else {
                    guard t < text.count, text[t] == "[" else { return false }
                    t += 1
                    p += 1
                    continue
                }
                var members = Array(pattern[(p + 1)..<end])
                let negated = members.first == "!"
                if negated { members.removeFirst() }
                var found = false
                var index = 0
                while index < members.count {
                    if index + 2 < members.count, members[index + 1] == "-" {
                        if members[index] <= text[t] && text[t] <= members[index + 2] { found = true }
                        index += 3
                    } else {
                        if members[index] == text[t] { found = true }
                        index += 1
                    }
                }
                guard found != negated else { return false }
                t += 1
                p = end + 1
            default:
                guard t < text.count, text[t] == pattern[p] else { return false }
                t += 1
                p += 1
            }
        }
        return t == text.count
    }
}

/// What the remote-control commands `enable_events`, `disable_events` and `heartbeat` do. The event dispatcher
/// provides them; a worker without one answers as Celery does without a dispatcher
/// (`{"error": "event dispatcher unavailable"}`).
public struct ControlHooks: Sendable {
    /// Turns task events on; true if they were off (Celery: "task events enabled" / "already enabled").
    public var enableEvents: (@Sendable () -> Bool)?
    /// Turns task events off; true if they were on.
    public var disableEvents: (@Sendable () -> Bool)?
    /// Sends a `worker-heartbeat` event now (Celery sends it with `freq` 5).
    public var heartbeat: (@Sendable () -> Void)?

    public init(
        enableEvents: (@Sendable () -> Bool)? = nil,
        disableEvents: (@Sendable () -> Bool)? = nil,
        heartbeat: (@Sendable () -> Void)? = nil
    ) {
        self.enableEvents = enableEvents
        self.disableEvents = disableEvents
        self.heartbeat = heartbeat
    }
}
