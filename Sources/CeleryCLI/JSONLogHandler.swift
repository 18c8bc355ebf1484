import JSON
import Logging

/// A swift-log handler that writes one JSON object per line (`--log-format json`), for log shippers:
///
/// `{"timestamp": "2026-11-22T06:10:00.123456+00:00", "level": "info", "label": "swift-celery",
///   "message": "worker ready", "metadata": {"celery.queues": "celery"}, "source": "Celery",
///   "file": "Celery/Worker.swift", "line": 120}`
///
/// Metadata keeps its shape: strings, nested dictionaries and arrays become JSON strings, objects and arrays.
public struct JSONLogHandler: LogHandler {
    /// The logger's label.
    public let label: String
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let write: @Sendable ([UInt8]) -> Void

    /// A handler writing to standard error.
    public static func standardError(label: String) -> JSONLogHandler {
        JSONLogHandler(label: label, write: writeToStandardError)
    }

    /// A handler giving each line (with its trailing newline) to `write`.
    public init(label: String, write: @escaping @Sendable ([UInt8]) -> Void) {
        self.label = label
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        write(line(event: event, metadata: merged, now: .now()))
    }

    /// The JSON line for one record (keys in a fixed order; metadata keys sorted).
    func line(event: LogEvent, metadata: Logger.Metadata, now: CeleryTimestamp) -> [UInt8] {
        var object: JSONObject = [
            "timestamp": .string(now.iso8601),
            "level": .string(event.level.rawValue),
            "label": .string(label),
            "message": .string(event.message.description),
        ]
        var members: JSONObject = [:]
        for key in metadata.keys.sorted() { members[key] = Self.json(metadata[key]!) }
        object["metadata"] = .object(members)
        if let error = event.error { object["error"] = .string("\(error)") }
        object["source"] = .string(event.source)
        object["file"] = .string(event.file)
        object["line"] = .int(Int(event.line))
        return JSONValue.object(object).serialized() + [UInt8(ascii: "\n")]
    }

    static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): return .string(text)
        case .stringConvertible(let convertible): return .string(convertible.description)
        case .array(let items): return .array(items.map(json))
        case .dictionary(let members):
            var object: JSONObject = [:]
            for key in members.keys.sorted() { object[key] = json(members[key]!) }
            return .object(object)
        }
    }

    /// One `write(2)` per line, so lines from concurrent tasks never interleave (up to the pipe's atomic size).
    private static let writeToStandardError: @Sendable ([UInt8]) -> Void = { bytes in
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = systemWrite(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { return }
                offset += written
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Musl)
import Musl
private let systemWrite = Musl.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif
