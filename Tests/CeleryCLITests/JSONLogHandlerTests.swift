import Celery
import JSON
import Logging
import Synchronization
import Testing

@testable import CeleryCLI

@Suite("JSON log lines")
struct JSONLogHandlerTests {
    final class Lines: Sendable {
        let lines = Mutex<[[UInt8]]>([])
        func append(_ line: [UInt8]) { lines.withLock { $0.append(line) } }
        var all: [[UInt8]] { lines.withLock { $0 } }
    }

    @Test("each record is one line of JSON with level, message, merged metadata and source")
    func oneLinePerRecord() throws {
        let sink = Lines()
        var handler = JSONLogHandler(label: "swift-celery") { sink.append($0) }
        handler.logLevel = .debug
        handler[metadataKey: "celery.hostname"] = "w1@host"
        var logger = Logger(label: "swift-celery") { _ in handler }
        logger[metadataKey: "celery.task.id"] = "abc"
        logger.info(
            "task \"quoted\"\nsecond line",
            metadata: [
                "count": "\(3)",
                "nested": ["a": "1", "list": ["x", "y"]],
            ]
        )
        logger.trace("filtered out below debug")
        logger.error("failed")

        let lines = sink.all
        #expect(lines.count == 2)
        #expect(lines.allSatisfy { $0.last == UInt8(ascii: "\n") && $0.dropLast().allSatisfy { $0 != 10 } })
        let first = try JSONValue(parsing: Array(lines[0].dropLast()))
        #expect(first["level"] == "info")
        #expect(first["message"] == "task \"quoted\"\nsecond line")
        #expect(first["label"] == "swift-celery")
        #expect(
            first["metadata"]
                == [
                    "celery.hostname": "w1@host", "celery.task.id": "abc", "count": "3",
                    "nested": ["a": "1", "list": ["x", "y"]],
                ]
        )
        #expect(first["file"]?.stringValue?.hasSuffix("JSONLogHandlerTests.swift") == true)
        #expect((first["line"]?.intValue ?? 0) > 0)
        #expect(first["timestamp"]?.stringValue?.hasSuffix("+00:00") == true)
        let second = try JSONValue(parsing: Array(lines[1].dropLast()))
        #expect(second["level"] == "error")
        #expect(second["metadata"] == ["celery.hostname": "w1@host", "celery.task.id": "abc"])
    }
}
