import NIOCore

/// One complete, validated RESP2/RESP3 frame, kept as a slice of the receive buffer and decoded on demand.
///
/// A token is only ever created by ``RESPToken/init(consuming:depthLimit:)``, which checks the whole frame, so the
/// accessors below can walk it without further bounds errors.
public struct RESPToken: Sendable, Hashable, CustomStringConvertible {
    /// The raw bytes of the frame, from its type byte to its final CRLF.
    public let base: ByteBuffer

    /// The frame's type byte.
    public enum Kind: UInt8, Sendable {
        case simpleString = 43  // +
        case simpleError = 45  // -
        case integer = 58  // :
        case bulkString = 36  // $
        case array = 42  // *
        case null = 95  // _
        case double = 44  // ,
        case boolean = 35  // #
        case blobError = 33  // !
        case verbatimString = 61  // =
        case bigNumber = 40  // (
        case map = 37  // %
        case set = 126  // ~
        case attribute = 124  // |
        case push = 62  // >
    }

    /// The decoded shape of a frame. Aggregates are lazy sequences over the same buffer.
    public enum Value: Sendable, Hashable {
        case simpleString(ByteBuffer)
        case simpleError(ByteBuffer)
        case integer(Int64)
        case bulkString(ByteBuffer)
        case null
        case double(Double)
        case boolean(Bool)
        case blobError(ByteBuffer)
        case verbatimString(ByteBuffer)
        case bigNumber(ByteBuffer)
        case array(Array)
        case map(Map)
        case set(Array)
        case attribute(Map)
        case push(Array)
    }

    /// Builds a token from bytes already known to be exactly one valid frame (tests, and slices of tokens).
    @usableFromInline
    init(validated base: ByteBuffer) {
        self.base = base
    }

    /// Reads one frame from the front of `buffer` if it is complete.
    ///
    /// Returns `nil` (and leaves the buffer alone) when more bytes are needed; on success the reader index moves
    /// past the frame. Any fragmentation is fine: call again when more bytes arrive.
    /// - Throws: ``RESPParsingError`` when the bytes are not RESP or nest deeper than `depthLimit`.
    public init?(consuming buffer: inout ByteBuffer, depthLimit: Int = 128) throws(RESPParsingError) {
        let start = buffer.readerIndex
        guard let end = try RESPToken.frameEnd(in: buffer, at: start, depth: 0, depthLimit: depthLimit) else {
            return nil
        }
        self.base = buffer.getSlice(at: start, length: end - start)!
        buffer.moveReaderIndex(to: end)
    }

    /// Parses exactly one frame from the bytes (for tests and tools); fails if incomplete or followed by more.
    public init(parsing bytes: some Sequence<UInt8>, depthLimit: Int = 128) throws(RESPParsingError) {
        var buffer = ByteBuffer(bytes: Swift.Array(bytes))
        guard let token = try RESPToken(consuming: &buffer, depthLimit: depthLimit) else {
            throw RESPParsingError(.incomplete, offset: buffer.writerIndex)
        }
        guard buffer.readableBytes == 0 else {
            throw RESPParsingError(.trailingBytes, offset: buffer.readerIndex)
        }
        self = token
    }

    /// The frame's type.
    public var kind: Kind {
        Kind(rawValue: base.getInteger(at: base.readerIndex, as: UInt8.self)!)!
    }

    /// Decodes the frame's top level. Cheap: aggregates are not walked until iterated.
    public var value: Value {
        let start = base.readerIndex
        switch kind {
        case .simpleString: return .simpleString(lineSlice(at: start))
        case .simpleError: return .simpleError(lineSlice(at: start))
        case .bigNumber: return .bigNumber(lineSlice(at: start))
        case .integer:
            return .integer(RESPToken.parseInteger(lineSlice(at: start)) ?? 0)
        case .double:
            let text = String(buffer: lineSlice(at: start))
            switch text {
            case "inf": return .double(.infinity)
            case "-inf": return .double(-.infinity)
            case "nan", "-nan": return .double(.nan)
            default: return .double(Double(text) ?? .nan)
            }
        case .boolean:
            return .boolean(base.getInteger(at: start + 1, as: UInt8.self) == UInt8(ascii: "t"))
        case .null: return .null
        case .bulkString, .blobError, .verbatimString:
            let header = lineSlice(at: start)
            let length = Int(RESPToken.parseInteger(header) ?? -1)
            if length < 0 { return .null }
            var payload = base.getSlice(at: start + header.readableBytes + 3, length: length)!
            switch kind {
            case .bulkString: return .bulkString(payload)
            case .blobError: return .blobError(payload)
            default:
                // "txt:" prefix carries the format; callers want the text.
                payload.moveReaderIndex(forwardBy: min(4, payload.readableBytes))
                return .verbatimString(payload)
            }
        case .array, .set, .push, .map, .attribute:
            let header = lineSlice(at: start)
            let count = Int(RESPToken.parseInteger(header) ?? -1)
            if count < 0 { return .null }
            let body = base.getSlice(
                at: start + header.readableBytes + 3,
                length: base.writerIndex - (start + header.readableBytes + 3)
            )!
            switch kind {
            case .array: return .array(Array(count: count, buffer: body))
            case .set: return .set(Array(count: count, buffer: body))
            case .push: return .push(Array(count: count, buffer: body))
            case .map: return .map(Map(count: count, buffer: body))
            default: return .attribute(Map(count: count, buffer: body))
            }
        }
    }

    public var description: String {
        switch value {
        case .simpleString(let b), .bulkString(let b), .verbatimString(let b), .bigNumber(let b):
            return String(reflecting: String(buffer: b))
        case .simpleError(let b), .blobError(let b): return "(error) \(String(buffer: b))"
        case .integer(let i): return "(integer) \(i)"
        case .double(let d): return "(double) \(d)"
        case .boolean(let b): return "(boolean) \(b)"
        case .null: return "(nil)"
        case .array(let a), .set(let a), .push(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .map(let m), .attribute(let m):
            return "{" + m.map { "\($0.key.description): \($0.value.description)" }.joined(separator: ", ") + "}"
        }
    }

    /// The text between the type byte and the first CRLF.
    private func lineSlice(at start: Int) -> ByteBuffer {
        var index = start + 1
        while base.getInteger(at: index, as: UInt8.self) != UInt8(ascii: "\r") { index += 1 }
        return base.getSlice(at: start + 1, length: index - start - 1)!
    }
}

extension RESPToken {
    /// The elements of an array, set or push frame, decoded one at a time.
    public struct Array: Sequence, Sendable, Hashable {
        public let count: Int
        let buffer: ByteBuffer

        public struct Iterator: IteratorProtocol {
            var buffer: ByteBuffer
            var remaining: Int
            public mutating func next() -> RESPToken? {
                guard remaining > 0 else { return nil }
                remaining -= 1
                // The frame was validated as a whole, so each element parses.
                return try! RESPToken(consuming: &buffer, depthLimit: .max)
            }
        }

        public func makeIterator() -> Iterator { Iterator(buffer: buffer, remaining: count) }
        public var underestimatedCount: Int { count }

        /// The elements as a Swift array.
        public var elements: [RESPToken] { Swift.Array(self) }
    }

    /// The key-value pairs of a map or attribute frame, decoded one at a time.
    public struct Map: Sequence, Sendable, Hashable {
        public let count: Int
        let buffer: ByteBuffer

        public struct Iterator: IteratorProtocol {
            var buffer: ByteBuffer
            var remaining: Int
            public mutating func next() -> (key: RESPToken, value: RESPToken)? {
                guard remaining > 0 else { return nil }
                remaining -= 1
                let key = try! RESPToken(consuming: &buffer, depthLimit: .max)!
                let value = try! RESPToken(consuming: &buffer, depthLimit: .max)!
                return (key, value)
            }
        }

        public func makeIterator() -> Iterator { Iterator(buffer: buffer, remaining: count) }
        public var underestimatedCount: Int { count }
    }
}

extension RESPToken {
    /// Parses a decimal integer (optional leading `-`); nil on anything else or overflow.
    static func parseInteger(_ buffer: ByteBuffer) -> Int64? {
        buffer.withUnsafeReadableBytes { bytes -> Int64? in
            guard !bytes.isEmpty else { return nil }
            var index = 0
            var negative = false
            if bytes[0] == UInt8(ascii: "-") {
                negative = true
                index = 1
                guard bytes.count > 1 else { return nil }
            }
            var value: Int64 = 0
            while index < bytes.count {
                let digit = bytes[index] &- UInt8(ascii: "0")
                guard digit < 10 else { return nil }
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) =
                    negative ? m.subtractingReportingOverflow(Int64(digit)) : m.addingReportingOverflow(Int64(digit))
                guard !o1, !o2 else { return nil }
                value = a
                index += 1
            }
            return value
        }
    }

    /// Finds the end offset of the frame starting at `index`, or nil if the buffer does not hold all of it yet.
    static func frameEnd(
        in buffer: ByteBuffer,
        at index: Int,
        depth: Int,
        depthLimit: Int
    ) throws(RESPParsingError)
        -> Int?
    {
        guard let typeByte = buffer.getInteger(at: index, as: UInt8.self) else { return nil }
        guard let kind = Kind(rawValue: typeByte) else {
            throw RESPParsingError(.invalidType, offset: index)
        }
        guard let lineEnd = try findCRLF(in: buffer, from: index + 1) else { return nil }
        let afterLine = lineEnd + 2
        switch kind {
        case .simpleString, .simpleError, .bigNumber:
            return afterLine
        case .integer:
            guard parseInteger(buffer.getSlice(at: index + 1, length: lineEnd - index - 1)!) != nil else {
                throw RESPParsingError(.invalidInteger, offset: index + 1)
            }
            return afterLine
        case .double:
            let text = buffer.getString(at: index + 1, length: lineEnd - index - 1) ?? ""
            guard ["inf", "-inf", "nan", "-nan"].contains(text) || Double(text) != nil else {
                throw RESPParsingError(.invalidDouble, offset: index + 1)
            }
            return afterLine
        case .boolean:
            guard lineEnd == index + 2,
                let b = buffer.getInteger(at: index + 1, as: UInt8.self),
                b == UInt8(ascii: "t") || b == UInt8(ascii: "f")
            else { throw RESPParsingError(.invalidBoolean, offset: index + 1) }
            return afterLine
        case .null:
            guard lineEnd == index + 1 else { throw RESPParsingError(.invalidNull, offset: index + 1) }
            return afterLine
        case .bulkString, .blobError, .verbatimString:
            guard let length = parseInteger(buffer.getSlice(at: index + 1, length: lineEnd - index - 1)!),
                length >= -1, length <= RESPParsingError.maximumBulkLength
            else { throw RESPParsingError(.invalidLength, offset: index + 1) }
            if length == -1 {
                guard kind == .bulkString else { throw RESPParsingError(.invalidLength, offset: index + 1) }
                return afterLine
            }
            let end = afterLine + Int(length) + 2
            guard end <= buffer.writerIndex else { return nil }
            guard buffer.getInteger(at: end - 2, as: UInt16.self) == 0x0D0A else {
                throw RESPParsingError(.missingCRLF, offset: end - 2)
            }
            return end
        case .array, .set, .push, .map, .attribute:
            guard let count = parseInteger(buffer.getSlice(at: index + 1, length: lineEnd - index - 1)!),
                count >= -1, count <= Int64(Int32.max)
            else { throw RESPParsingError(.invalidLength, offset: index + 1) }
            if count == -1 {
                guard kind == .array else { throw RESPParsingError(.invalidLength, offset: index + 1) }
                return afterLine
            }
            guard depth < depthLimit else { throw RESPParsingError(.tooDeep, offset: index) }
            let elements = (kind == .map || kind == .attribute) ? Int(count) * 2 : Int(count)
            var cursor = afterLine
            for _ in 0..<elements {
                guard let next = try frameEnd(in: buffer, at: cursor, depth: depth + 1, depthLimit: depthLimit) else {
                    return nil
                }
                cursor = next
            }
            return cursor
        }
    }

    /// The offset of the next "\r\n" at or after `from`, nil if not yet received; a bare "\r" followed by
    /// something else is an error, and so is a header line longer than any valid one.
    static func findCRLF(in buffer: ByteBuffer, from: Int) throws(RESPParsingError) -> Int? {
        let found: Int?? = buffer.withUnsafeReadableBytes { bytes -> Int?? in
            let base = buffer.readerIndex
            var i = from - base
            while i < bytes.count {
                if bytes[i] == UInt8(ascii: "\r") {
                    guard i + 1 < bytes.count else { return .some(nil) }
                    guard bytes[i + 1] == UInt8(ascii: "\n") else { return .none }
                    return .some(i + base)
                }
                i += 1
            }
            return .some(nil)
        }
        guard let result = found else { throw RESPParsingError(.missingCRLF, offset: from) }
        return result
    }
}

/// The bytes from the server are not RESP. The connection that read them must be closed.
public struct RESPParsingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was wrong.
    public enum Code: String, Sendable, Hashable {
        case invalidType = "unknown type byte"
        case invalidInteger = "invalid integer"
        case invalidDouble = "invalid double"
        case invalidBoolean = "invalid boolean"
        case invalidNull = "invalid null"
        case invalidLength = "invalid length"
        case missingCRLF = "missing CRLF"
        case tooDeep = "aggregate nesting too deep"
        case incomplete = "incomplete frame"
        case trailingBytes = "bytes after the frame"
    }

    /// Redis's own limit for one bulk string (proto-max-bulk-len maximum).
    public static let maximumBulkLength: Int64 = 1 << 32

    public var code: Code
    /// Offset in the receive buffer where the problem was found.
    public var offset: Int

    public init(_ code: Code, offset: Int) {
        self.code = code
        self.offset = offset
    }

    public var description: String { "RESP parsing error: \(code.rawValue) at offset \(offset)" }
}
