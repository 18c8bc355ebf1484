import ExtrasBase64
import JSON

/// One task message as a Celery 5 client put it on Redis: kombu's envelope, the protocol v2 headers and the
/// decoded body `[args, kwargs, embed]` (protocol v1 messages are read into the same shape).
public struct TaskMessage: Sendable {
    /// The envelope's `properties.delivery_tag`: the key of this message in kombu's `unacked` hash.
    public var deliveryTag: String
    /// `properties.delivery_info.exchange` (`""` for Celery's direct queues).
    public var exchange: String
    /// `properties.delivery_info.routing_key`: the queue the client addressed.
    public var routingKey: String
    /// `properties.priority` (0–9; on Redis 0 is the most urgent).
    public var priority: Int
    /// True when kombu restored this message (`headers.redelivered`).
    public var redelivered: Bool
    /// The registered task name (`headers.task`).
    public var taskName: String
    /// The task id (`headers.id`).
    public var id: String
    /// The message headers as sent, custom ones included.
    public var headers: JSONObject
    /// Positional arguments.
    public var args: [JSONValue]
    /// Keyword arguments.
    public var kwargs: JSONObject
    /// `{"callbacks", "errbacks", "chain", "chord"}`; empty when absent.
    public var embed: JSONObject
    /// The envelope exactly as popped, kept to record in `unacked` and to restore.
    public var rawEnvelope: [UInt8]
    /// Which protocol the message used (1 or 2).
    public var protocolVersion: Int

    /// Number of earlier attempts (`headers.retries`).
    public var retries: Int { headers["retries"]?.intValue ?? 0 }
    /// `headers.eta`, read as UTC when naive.
    public var eta: CeleryTimestamp? { headers["eta"]?.stringValue.flatMap { CeleryTimestamp(iso8601: $0) } }
    /// `headers.expires`, read as UTC when naive.
    public var expires: CeleryTimestamp? {
        headers["expires"]?.stringValue.flatMap { CeleryTimestamp(iso8601: $0) }
    }
    /// `headers.group`.
    public var groupID: String? { headers["group"]?.stringValue }
    /// `headers.parent_id`.
    public var parentID: String? { headers["parent_id"]?.stringValue }
    /// `headers.root_id`.
    public var rootID: String? { headers["root_id"]?.stringValue }
    /// `headers.ignore_result` (`null` from `send_task` means false).
    public var ignoreResult: Bool { headers["ignore_result"]?.boolValue ?? false }
    /// `headers.timelimit` as (hard, soft) seconds: Celery sends `[hard, soft]`.
    public var timeLimit: (hard: Double?, soft: Double?) {
        guard let pair = headers["timelimit"]?.arrayValue, pair.count == 2 else { return (nil, nil) }
        return (pair[0].doubleValue, pair[1].doubleValue)
    }
}

/// Why a popped message cannot become a task. `taskID` and `taskName` are set when the message got far enough
/// to name them, so the worker can store a FAILURE a client is waiting for.
public struct TaskMessageError: Error, Sendable, CustomStringConvertible {
    /// What was wrong.
    public enum Code: String, Sendable {
        case envelopeNotJSON = "the envelope is not JSON"
        case envelopeShape = "the envelope is not a kombu message"
        case missingDeliveryTag = "the envelope has no properties.delivery_tag"
        case contentTypeRefused = "content type not accepted"
        case bodyEncoding = "the body cannot be decoded"
        case bodyTooLarge = "the body decompresses to more than the size limit"
        case bodyNotJSON = "the body is not JSON"
        case bodyShape = "the body is not [args, kwargs, embed]"
        case missingTaskName = "the message names no task"
        case missingTaskID = "the message has no task id"
    }

    public var code: Code
    public var detail: String
    public var taskID: String?
    public var taskName: String?
    /// The delivery tag, when the envelope had one (the message is then in `unacked` and must be acked).
    public var deliveryTag: String?

    public var description: String {
        var text = "\(code.rawValue): \(detail)"
        if let taskID { text += " (task id \(taskID))" }
        return text
    }
}

extension TaskMessage {
    /// Where the envelope's first member is `"body"` and its value a string of base64 characters only (kombu's
    /// layout: `{"body": "<base64>", ...}`), the range of that text between its quotes. Such a string has no escapes,
    /// so its bytes are its value. Nil for any other envelope.
    package static func leadingBodyText(in bytes: [UInt8]) -> Range<Int>? {
        bytes.withUnsafeBufferPointer { buffer -> Range<Int>? in
            var index = 0
            func skipSpace() {
                while index < buffer.count {
                    switch buffer[index] {
                    case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"): index += 1
                    default: return
                    }
                }
            }
            func expect(_ byte: UInt8) -> Bool {
                guard index < buffer.count, buffer[index] == byte else { return false }
                index += 1
                return true
            }
            skipSpace()
            guard expect(UInt8(ascii: "{")) else { return nil }
            skipSpace()
            for byte in #""body""#.utf8 {
                guard expect(byte) else { return nil }
            }
            skipSpace()
            guard expect(UInt8(ascii: ":")) else { return nil }
            skipSpace()
            guard expect(UInt8(ascii: "\"")) else { return nil }
            let start = index
            while index < buffer.count {
                switch buffer[index] {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"), UInt8(ascii: "="):
                    index += 1
                case UInt8(ascii: "\""):
                    return start..<index
                default:
                    return nil
                }
            }
            return nil
        }
    }

    /// The content types this worker accepts, as Celery's default `accept_content = ["json"]`.
    public static let acceptedContentTypes: Set<String> = ["application/json"]

    /// The most bytes a compressed body may decompress to unless the caller says otherwise: the worker's default
    /// message size limit (64 MiB).
    public static let defaultBodyLimit = 64 << 20

    /// Decodes a message popped from a queue list; a compressed body may decompress to at most `bodyLimit` bytes.
    public init(envelope bytes: [UInt8], bodyLimit: Int = TaskMessage.defaultBodyLimit) throws(TaskMessageError) {
        func fail(
            _ code: TaskMessageError.Code,
            _ detail: String,
            id: String? = nil,
            name: String? = nil,
            tag: String? = nil
        ) -> TaskMessageError {
            TaskMessageError(code: code, detail: detail, taskID: id, taskName: name, deliveryTag: tag)
        }
        // kombu writes the body first, as base64 (`{"body": "<base64>", ...}`): jansson's lexer reads a string one
        // byte at a time, so the base64 text is cut out before it parses the rest and decoded from the envelope's
        // bytes. Anything else (another order, escapes, any key named twice, which could be another "body") is
        // parsed whole, as are errors, so that their positions refer to the bytes the sender wrote.
        var envelope: JSONValue?
        var rawBody: ArraySlice<UInt8>?
        if let range = Self.leadingBodyText(in: bytes) {
            var rest: [UInt8] = []
            rest.reserveCapacity(bytes.count - range.count)
            rest.append(contentsOf: bytes[..<range.lowerBound])
            rest.append(contentsOf: bytes[range.upperBound...])
            // With no key named twice, the object's "body" is the empty string left in place of the text.
            if let parsed = try? JSONValue(parsingRejectingDuplicateKeys: rest) {
                envelope = parsed
                rawBody = bytes[range]
            }
        }
        if envelope == nil {
            do {
                envelope = try JSONValue(parsing: bytes)
            } catch {
                throw fail(.envelopeNotJSON, error.description)
            }
        }
        guard let object = envelope?.objectValue else {
            throw fail(.envelopeShape, "top level is not an object")
        }
        let properties = object["properties"]?.objectValue ?? [:]
        var headers = object["headers"]?.objectValue ?? [:]
        let tag = properties["delivery_tag"]?.stringValue
        // Enough to name the task in errors, whatever else is wrong.
        let headerID = headers["id"]?.stringValue ?? properties["correlation_id"]?.stringValue
        let headerName = headers["task"]?.stringValue
        guard let tag, !tag.isEmpty else {
            throw fail(.missingDeliveryTag, "kombu needs it to ack", id: headerID, name: headerName)
        }
        let contentType = object["content-type"]?.stringValue ?? "application/json"
        guard Self.acceptedContentTypes.contains(contentType) else {
            throw fail(
                .contentTypeRefused,
                "Refusing to deserialize untrusted content of type \(contentType)",
                id: headerID,
                name: headerName,
                tag: tag
            )
        }
        guard let bodyText = object["body"]?.stringValue else {
            throw fail(.bodyShape, "the envelope has no body string", id: headerID, name: headerName, tag: tag)
        }
        var bodyBytes: [UInt8]
        switch properties["body_encoding"]?.stringValue {
        case "base64":
            do {
                if let rawBody {
                    bodyBytes = try Base64.decode(bytes: rawBody)
                } else {
                    bodyBytes = try Base64.decode(string: bodyText)
                }
            } catch {
                throw fail(.bodyEncoding, "invalid base64 (\(error))", id: headerID, name: headerName, tag: tag)
            }
        case nil, "utf-8", "utf8":
            bodyBytes = rawBody.map { Array($0) } ?? Array(bodyText.utf8)
        case let other?:
            throw fail(.bodyEncoding, "unknown body_encoding \(other)", id: headerID, name: headerName, tag: tag)
        }
        if let compression = headers["compression"]?.stringValue {
            guard let method = MessageCompression(header: compression) else {
                throw fail(
                    .bodyEncoding,
                    "unknown compression \(compression)",
                    id: headerID,
                    name: headerName,
                    tag: tag
                )
            }
            do {
                bodyBytes = try method.decompress(bodyBytes, limit: bodyLimit)
            } catch {
                switch error {
                case .tooLarge(let limit):
                    throw fail(
                        .bodyTooLarge,
                        "a \(compression) body of \(bodyBytes.count) bytes decompresses to more than \(limit) bytes",
                        id: headerID,
                        name: headerName,
                        tag: tag
                    )
                case .invalid(let reason):
                    throw fail(.bodyEncoding, reason, id: headerID, name: headerName, tag: tag)
                }
            }
        }
        let body: JSONValue
        do {
            body = try JSONValue(parsing: bodyBytes)
        } catch {
            throw fail(.bodyNotJSON, error.description, id: headerID, name: headerName, tag: tag)
        }

        var args: [JSONValue]
        var kwargs: JSONObject
        var embed: JSONObject = [:]
        let version: Int
        if headerName != nil {
            version = 2
            guard let parts = body.arrayValue, parts.count == 3 else {
                let count = body.arrayValue.map { "\($0.count) elements" } ?? "not an array"
                throw fail(.bodyShape, "expected 3 elements, got \(count)", id: headerID, name: headerName, tag: tag)
            }
            guard let a = parts[0].arrayValue, let k = parts[1].objectValue else {
                throw fail(
                    .bodyShape,
                    "args must be an array and kwargs an object",
                    id: headerID,
                    name: headerName,
                    tag: tag
                )
            }
            args = a
            kwargs = k
            embed = parts[2].objectValue ?? [:]
        } else if let v1 = body.objectValue, v1["task"]?.stringValue != nil {
            // Protocol 1: everything lives in the body; lift it into v2 headers.
            version = 1
            args = v1["args"]?.arrayValue ?? []
            kwargs = v1["kwargs"]?.objectValue ?? [:]
            for key in ["task", "id", "group", "group_index", "retries", "eta", "expires", "timelimit"] {
                if let value = v1[key] { headers[key] = value }
            }
            if let callbacks = v1["callbacks"] { embed["callbacks"] = callbacks }
            if let errbacks = v1["errbacks"] { embed["errbacks"] = errbacks }
            if let chord = v1["chord"] { embed["chord"] = chord }
        } else {
            throw fail(.missingTaskName, "no headers.task and no protocol 1 body", id: headerID, tag: tag)
        }
        guard let name = headers["task"]?.stringValue, !name.isEmpty else {
            throw fail(.missingTaskName, "headers.task is empty", id: headerID, tag: tag)
        }
        guard let id = headers["id"]?.stringValue ?? headerID, !id.isEmpty else {
            throw fail(.missingTaskID, "headers.id is missing", name: name, tag: tag)
        }
        let deliveryInfo = properties["delivery_info"]?.objectValue ?? [:]
        self.deliveryTag = tag
        self.exchange = deliveryInfo["exchange"]?.stringValue ?? ""
        self.routingKey = deliveryInfo["routing_key"]?.stringValue ?? ""
        self.priority = properties["priority"]?.intValue ?? 0
        self.redelivered = headers["redelivered"]?.boolValue ?? false
        self.taskName = name
        self.id = id
        self.headers = headers
        self.args = args
        self.kwargs = kwargs
        self.embed = embed
        self.rawEnvelope = bytes
        self.protocolVersion = version
    }
}
