import CeleryClient
import ExtrasBase64
import Foundation
import JSON
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Envelopes captured from Celery 5.7 (`LRANGE` after `apply_async` / `send_task`), and broken variants.
@Suite struct TaskMessageTests {
    static func fixture(_ name: String) throws -> [UInt8] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)")
        return Array(try Data(contentsOf: url))
    }

    @Test func decodesApplyAsyncWithEveryOption() throws {
        let message = try TaskMessage(envelope: try Self.fixture("add-v2.json"))
        #expect(message.taskName == "tasks.add")
        #expect(message.id == "11111111-2222-3333-4444-555555555555")
        #expect(message.args == [2, 3])
        #expect(message.kwargs.isEmpty)
        #expect(message.priority == 7)
        #expect(message.routingKey == "golden")
        #expect(message.exchange == "")
        #expect(message.protocolVersion == 2)
        #expect(message.eta != nil)
        #expect(message.expires != nil)
        #expect(message.timeLimit.hard == 30 && message.timeLimit.soft == 20)
        #expect(message.headers["x-custom"] == "v")
        #expect(message.embed["callbacks"]?[0]?["task"] == "tasks.add")
        #expect(message.rootID == message.id)
        #expect(!message.deliveryTag.isEmpty)
        #expect(!message.redelivered)
    }

    @Test func decodesSendTaskWithRichValues() throws {
        let message = try TaskMessage(envelope: try Self.fixture("echo-send-task.json"))
        #expect(message.taskName == "tasks.echo")
        #expect(message.args == [1, "é😀", ["__type__": "x"]])
        #expect(message.kwargs["k"] == [1, nil, true, 2.5, .int(Int.max)])
        #expect(!message.ignoreResult)  // send_task sends null
        #expect(message.priority == 0)
    }

    static func envelope(
        body: JSONValue,
        headers: JSONObject = ["task": "tasks.add", "id": "id-1"],
        contentType: String = "application/json",
        bodyEncoding: String? = "base64",
        tag: String? = "tag-1"
    ) -> [UInt8] {
        let bodyText = body.serializedString()
        var properties: JSONObject = [
            "correlation_id": "id-1", "delivery_info": ["exchange": "", "routing_key": "q"], "priority": 0,
        ]
        if let bodyEncoding { properties["body_encoding"] = .string(bodyEncoding) }
        if let tag { properties["delivery_tag"] = .string(tag) }
        let encoded = bodyEncoding == "base64" ? Base64.encodeToString(bytes: Array(bodyText.utf8)) : bodyText
        let envelope: JSONValue = [
            "body": .string(encoded), "content-encoding": "utf-8", "content-type": .string(contentType),
            "headers": .object(headers), "properties": .object(properties),
        ]
        return envelope.serialized()
    }

    @Test func plainJSONBodyWithoutEncoding() throws {
        let message = try TaskMessage(envelope: Self.envelope(body: [[1, 2], [:], [:]], bodyEncoding: nil))
        #expect(message.args == [1, 2])
    }

    @Test func protocolOneBodyIsLiftedIntoHeaders() throws {
        let body: JSONValue = [
            "task": "tasks.add", "id": "v1-id", "args": [4, 5], "kwargs": ["z": 1], "retries": 2,
            "eta": nil, "expires": nil, "utc": true, "callbacks": nil, "errbacks": nil,
        ]
        let message = try TaskMessage(envelope: Self.envelope(body: body, headers: [:]))
        #expect(message.protocolVersion == 1)
        #expect(message.taskName == "tasks.add")
        #expect(message.id == "v1-id")
        #expect(message.args == [4, 5])
        #expect(message.kwargs == ["z": 1])
        #expect(message.retries == 2)
    }

    static let broken: [(String, [UInt8], TaskMessageError.Code, String?)] = [
        ("not JSON", Array("{\"body\": ".utf8), .envelopeNotJSON, nil),
        ("not an object", Array("[1, 2]".utf8), .envelopeShape, nil),
        ("no delivery_tag", envelope(body: [[], [:], [:]], tag: nil), .missingDeliveryTag, "id-1"),
        (
            "pickle", envelope(body: [[], [:], [:]], contentType: "application/x-python-serialize"),
            .contentTypeRefused, "id-1"
        ),
        ("yaml", envelope(body: [[], [:], [:]], contentType: "application/x-yaml"), .contentTypeRefused, "id-1"),
        ("two-element body", envelope(body: [[1], [:]]), .bodyShape, "id-1"),
        ("args not a list", envelope(body: [1, [:], [:]]), .bodyShape, "id-1"),
        (
            "no task header, no v1 body", envelope(body: [[], [:], [:]], headers: ["id": "id-1"]), .missingTaskName,
            "id-1"
        ),
    ]

    @Test(arguments: broken)
    func rejectsBrokenMessages(label: String, bytes: [UInt8], code: TaskMessageError.Code, taskID: String?) {
        do {
            _ = try TaskMessage(envelope: bytes)
            Issue.record("\(label) decoded")
        } catch {
            #expect(error.code == code, "\(label)")
            #expect(error.taskID == taskID, "\(label)")
        }
    }

    @Test func bodyThatIsNotBase64() throws {
        var object = try #require(try JSONValue(parsing: Self.envelope(body: [[], [:], [:]])).objectValue)
        object["body"] = "***not base64***"
        do {
            _ = try TaskMessage(envelope: JSONValue.object(object).serialized())
            Issue.record("decoded")
        } catch {
            #expect(error.code == .bodyEncoding)
            #expect(error.deliveryTag == "tag-1")
        }
    }

    // kombu writes `{"body": "<base64>", ...}`: the decoder cuts the base64 text out before jansson parses the rest
    // (its lexer copies a string one byte at a time) and decodes it from the envelope's bytes.

    @Test func findsTheBase64BodyKombuWritesFirst() throws {
        let bytes = try Self.fixture("add-v2.json")
        let range = try #require(TaskMessage.leadingBodyText(in: bytes))
        let body = try #require(try JSONValue(parsing: bytes).objectValue?["body"]?.stringValue)
        #expect(String(decoding: bytes[range], as: UTF8.self) == body)
        let compact = Array(" {\"body\":\"W10=\",\"headers\":{}}".utf8)
        let compactRange = try #require(TaskMessage.leadingBodyText(in: compact))
        #expect(String(decoding: compact[compactRange], as: UTF8.self) == "W10=")
    }

    @Test(arguments: [
        #"{"headers": {}, "body": "W10="}"#, #"{"body": "W1\u0030="}"#, #"{"body": "W10=\n"}"#, #"{"body": "W10="#,
        #"{"body": 5}"#, #"{"bodyx": "W10="}"#, #"["body", "W10="]"#, #"{"body": "é"}"#, #"{"body" "W10="}"#, "",
    ])
    func leavesOtherEnvelopesToTheWholeParse(text: String) {
        #expect(TaskMessage.leadingBodyText(in: Array(text.utf8)) == nil)
    }

    /// The same message with its body first (cut out) and last (parsed whole by jansson) decodes the same.
    @Test(arguments: ["add-v2.json", "echo-send-task.json"])
    func decodesTheSameWhereverTheBodyIs(fixture: String) throws {
        let first = try Self.fixture(fixture)
        #expect(TaskMessage.leadingBodyText(in: first) != nil)
        var object = try #require(try JSONValue(parsing: first).objectValue)
        let body = object.removeValue(forKey: "body")
        #expect(body != nil)
        object["body"] = body
        let last = JSONValue.object(object).serialized()
        #expect(TaskMessage.leadingBodyText(in: last) == nil)
        let (a, b) = (try TaskMessage(envelope: first), try TaskMessage(envelope: last))
        #expect(a.args == b.args && a.kwargs == b.kwargs && a.embed == b.embed && a.headers == b.headers)
        #expect(a.id == b.id && a.taskName == b.taskName && a.deliveryTag == b.deliveryTag)
        #expect(a.rawEnvelope == first)
        #expect(!a.args.isEmpty)
    }

    /// A second "body" member wins, as when jansson (or Python) parses the whole envelope.
    @Test func aDuplicateBodyKeepsItsLastValue() throws {
        var bytes = Self.envelope(body: [[9], [:], [:]])
        #expect(TaskMessage.leadingBodyText(in: bytes) != nil)
        let second = Base64.encodeToString(bytes: Array(#"[[1, 2], {}, {}]"#.utf8))
        bytes.removeLast()
        bytes += Array(#", "body": "\#(second)"}"#.utf8)
        #expect(try TaskMessage(envelope: bytes).args == [1, 2])
    }

    /// A later "body" that is empty, or names the key with an escape, still wins over the first: any key named
    /// twice sends the envelope through the whole parse.
    @Test(arguments: [#""body""#, #""bo\u0064y""#])
    func aLaterEmptyBodyWinsToo(key: String) throws {
        var bytes = Self.envelope(body: [[9], [:], [:]])
        bytes.removeLast()
        bytes += Array(#", \#(key): ""}"#.utf8)
        #expect(TaskMessage.leadingBodyText(in: bytes) != nil)
        do {
            _ = try TaskMessage(envelope: bytes)
            Issue.record("decoded the first body")
        } catch {
            #expect(error.code == .bodyNotJSON)
        }
    }

    /// A syntax error after the body is reported at its place in the bytes the sender wrote.
    @Test func anErrorAfterTheBodyIsReportedAtItsPlace() throws {
        let bytes = Array(#"{"body": "W10=", "headers": {"task": "tasks.add",, }}"#.utf8)
        #expect(TaskMessage.leadingBodyText(in: bytes) != nil)
        var expected = ""
        do { _ = try JSONValue(parsing: bytes) } catch { expected = error.description }
        #expect(expected.contains("column"))
        do {
            _ = try TaskMessage(envelope: bytes)
            Issue.record("decoded")
        } catch {
            #expect(error.code == .envelopeNotJSON)
            #expect(error.detail == expected)
        }
    }
}
