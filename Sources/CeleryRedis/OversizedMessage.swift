import CeleryProtocol
import RESP

/// What is known of a message longer than the worker's size limit: measured before anything parsed it, so only
/// its size and the task id and name found by a cheap text search of its first and last 64 KiB (kombu writes the
/// body first, then headers and properties).
package struct OversizedMessage: Sendable, Equatable {
    /// The message's length in bytes.
    package var size: Int
    /// `headers.id` (else `properties.correlation_id`), when found.
    package var taskID: String?
    /// `headers.task`, when found.
    package var taskName: String?

    /// How much of each end of a message the search reads.
    package static let searchWindow = 65_536

    package init(size: Int, taskID: String?, taskName: String?) {
        self.size = size
        self.taskID = taskID
        self.taskName = taskName
    }

    /// From the pop script's `[size, id or nil, task or nil]`.
    package init(scriptReply: [RESPToken]) {
        self.size = scriptReply.first?.int ?? 0
        self.taskID = scriptReply.count > 1 ? scriptReply[1].string : nil
        self.taskName = scriptReply.count > 2 ? scriptReply[2].string : nil
    }

    /// Searches the ends of a message popped whole (the BRPOP path), as the pop script does in Redis.
    package init(scanning bytes: some Collection<UInt8>) {
        let head = Array(bytes.prefix(Self.searchWindow))
        let tail = Array(bytes.suffix(Self.searchWindow))
        func find(_ key: String) -> String? {
            Self.field(key, in: tail) ?? Self.field(key, in: head)
        }
        self.size = bytes.count
        self.taskID = find("id") ?? find("correlation_id")
        self.taskName = find("task")
    }

    /// The string value of the first `"key": "value"` in `text` (no escapes in the value), as Lua's
    /// `string.match(text, '"key"%s*:%s*"([^"\\]+)"')` finds it.
    package static func field(_ key: String, in text: [UInt8]) -> String? {
        let needle = Array("\"\(key)\"".utf8)
        let quote = UInt8(ascii: "\"")
        let backslash = UInt8(ascii: "\\")
        let colon = UInt8(ascii: ":")
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }
        var start = 0
        while start + needle.count <= text.count {
            guard text[start..<start + needle.count].elementsEqual(needle) else {
                start += 1
                continue
            }
            var index = start + needle.count
            while index < text.count, isSpace(text[index]) { index += 1 }
            if index < text.count, text[index] == colon {
                index += 1
                while index < text.count, isSpace(text[index]) { index += 1 }
                if index < text.count, text[index] == quote {
                    let valueStart = index + 1
                    var end = valueStart
                    while end < text.count, text[end] != quote, text[end] != backslash { end += 1 }
                    if end > valueStart, end < text.count, text[end] == quote {
                        return String(decoding: text[valueStart..<end], as: UTF8.self)
                    }
                }
            }
            start += 1
        }
        return nil
    }
}
