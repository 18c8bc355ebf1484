import ExtrasBase64
import Foundation
import JSON
import Testing

@testable import Celery

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
}
