import CeleryClient
import ExtrasBase64
import Foundation
import JSON
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// `OutgoingTask.envelope()` writes what Celery 5.7's `apply_async` writes, and `TaskMessage` reads it back.
struct TaskMessageEncodingTests {
    static func sample() -> OutgoingTask {
        var task = OutgoingTask(
            name: "tasks.add",
            id: "11111111-2222-3333-4444-555555555555",
            args: [2, 3],
            kwargs: ["z": "it's"],
            queue: "golden",
            priority: 7,
            origin: "swift@test"
        )
        task.eta = CeleryTimestamp(iso8601: "2026-11-22T03:59:14.475165+00:00")
        task.expires = CeleryTimestamp(iso8601: "2030-01-01T00:00:00+00:00")
        task.parentID = "parent"
        task.rootID = "root"
        task.groupID = "group"
        task.groupIndex = 2
        task.retries = 1
        task.hardTimeLimit = 30
        task.softTimeLimit = 20.5
        task.replyTo = "7acca0fb-5cf7-3bb2-ad28-e6eb6cc9f36b"
        task.callbacks = [
            [
                "task": "tasks.add", "args": [10], "kwargs": [:], "options": [:], "subtask_type": nil,
                "immutable": false,
            ]
        ]
        task.chain = [["task": "tasks.mul", "args": [10], "kwargs": [:], "options": [:]]]
        task.headers = ["x-custom": "v"]
        return task
    }

    @Test func roundTripsThroughTheDecoder() throws {
        let task = Self.sample()
        let message = try TaskMessage(envelope: task.envelope(deliveryTag: "tag-1"))
        #expect(message.deliveryTag == "tag-1")
        #expect(message.exchange == "")
        #expect(message.routingKey == "golden")
        #expect(message.priority == 7)
        #expect(message.taskName == "tasks.add")
        #expect(message.id == task.id)
        #expect(message.args == [2, 3])
        #expect(message.kwargs == ["z": "it's"])
        #expect(message.parentID == "parent")
        #expect(message.rootID == "root")
        #expect(message.groupID == "group")
        #expect(message.headers["group_index"] == 2)
        #expect(message.retries == 1)
        #expect(message.eta == task.eta)
        #expect(message.expires == task.expires)
        #expect(message.timeLimit.hard == 30)
        #expect(message.timeLimit.soft == 20.5)
        #expect(message.headers["timelimit"] == [30, 20.5])
        #expect(message.headers["x-custom"] == "v")
        #expect(message.headers["argsrepr"] == "(2, 3)")
        #expect(message.headers["kwargsrepr"] == #"{'z': "it's"}"#)  // Python's repr quoting
        #expect(message.headers["origin"] == "swift@test")
        #expect(message.ignoreResult == false)
        #expect(message.protocolVersion == 2)
        #expect(message.embed["callbacks"] == .array(task.callbacks!))
        #expect(message.embed["chain"] == .array(task.chain!))
        #expect(message.embed["errbacks"] == .null)
        #expect(message.embed["chord"] == .null)
        #expect(task.list == "golden\u{06}\u{16}6")
    }

    @Test func headerAndPropertyKeysMatchCeleryGolden() throws {
        let golden = try JSONValue(parsing: try TaskMessageTests.fixture("add-v2.json"))
        let ours = try JSONValue(parsing: Self.sample().envelope())
        #expect(ours.objectValue?.keys.elements == golden.objectValue?.keys.elements)
        #expect(ours["headers"]?.objectValue?.keys.elements == golden["headers"]?.objectValue?.keys.elements)
        #expect(ours["properties"]?.objectValue?.keys.elements == golden["properties"]?.objectValue?.keys.elements)
        #expect(ours["properties"]?["delivery_mode"] == 2)
        #expect(ours["properties"]?["correlation_id"] == ours["headers"]?["id"])
        #expect(ours["properties"]?["delivery_info"] == ["exchange": "", "routing_key": "golden"])
        #expect(ours["properties"]?["body_encoding"] == "base64")
        // The body: [args, kwargs, embed] with embed's four keys in Celery's order.
        let body = try JSONValue(
            parsing: try Base64.decode(string: try #require(ours["body"]?.stringValue))
        )
        #expect(body[2]?.objectValue?.keys.elements == ["callbacks", "errbacks", "chain", "chord"])
    }

    @Test func minimalTaskHasCeleryDefaults() throws {
        let task = OutgoingTask(name: "tasks.echo")
        let envelope = try JSONValue(parsing: task.envelope())
        let headers = try #require(envelope["headers"])
        #expect(headers["root_id"] == headers["id"])
        #expect(headers["parent_id"] == .null)
        #expect(headers["timelimit"] == [nil, nil])
        #expect(headers["argsrepr"] == "()")
        #expect(headers["kwargsrepr"] == "{}")
        #expect(headers["stamps"] == [:])
        #expect(envelope["properties"]?["expiration"] == nil)
        #expect(envelope["properties"]?["priority"] == 0)
        #expect(task.list == "celery")
        #expect(PythonRepr.arguments([1]) == "(1,)")
        #expect(PythonRepr.render([nil, true, 1.5, ["a": "b"]]) == "[None, True, 1.5, {'a': 'b'}]")
    }

    @Test func idsAreLowercaseUUID4() {
        let ids = (0..<100).map { _ in OutgoingTask.newID() }
        #expect(Set(ids).count == 100)
        for id in ids {
            let parts = id.split(separator: "-")
            #expect(parts.map(\.count) == [8, 4, 4, 4, 12])
            #expect(parts[2].first == "4")
            #expect("89ab".contains(parts[3].first!))
            #expect(id == id.lowercased())
        }
    }
}
