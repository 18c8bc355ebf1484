import NIOCore

/// A command encoded once, at construction, as a RESP array of bulk strings ready to be written to a socket.
///
/// Arguments are written straight into the command's buffer; the array header is filled in afterwards in space
/// reserved in front of them, so building a command costs one buffer and no copies.
public struct RESPCommand: Sendable, Hashable {
    /// The encoded frame: `*<n>\r\n` followed by `n` bulk strings.
    public private(set) var buffer: ByteBuffer
    /// The number of bulk strings, command name included.
    public private(set) var count: Int

    private static let headerSpace = 24

    /// Starts a command with its name; add arguments with ``append(_:)`` or use the variadic initialisers.
    public init(_ name: String, capacity: Int = 64) {
        var buffer = ByteBufferAllocator().buffer(capacity: RESPCommand.headerSpace + capacity)
        buffer.moveWriterIndex(forwardBy: RESPCommand.headerSpace)
        buffer.moveReaderIndex(forwardBy: RESPCommand.headerSpace)
        self.buffer = buffer
        self.count = 0
        self.appendBulk(name)
        self.writeHeader()
    }

    /// A command from its name and arguments of any argument types.
    public init<each A: RESPArgument>(_ name: String, _ arguments: repeat each A) {
        self.init(name)
        for argument in repeat each arguments {
            argument.encode(into: &self)
        }
    }

    /// Appends arguments (an array argument appends each of its elements).
    public mutating func append(_ argument: some RESPArgument) {
        argument.encode(into: &self)
    }

    /// Appends one bulk string from raw bytes.
    public mutating func appendBulk(_ bytes: some Collection<UInt8>) {
        appendBulk(length: bytes.count) { $0.writeBytes(bytes) }
    }

    /// Appends one bulk string from a string's UTF-8.
    public mutating func appendBulk(_ string: String) {
        var string = string
        string.withUTF8 { appendBulk($0) }
    }

    /// Appends one bulk string from a buffer's readable bytes.
    public mutating func appendBulk(_ bytes: ByteBuffer) {
        appendBulk(length: bytes.readableBytes) { $0.writeImmutableBuffer(bytes) }
    }

    /// `$<length>\r\n<payload>\r\n`, then the array header is rewritten for the new count.
    @inline(__always)
    private mutating func appendBulk(length: Int, _ writePayload: (inout ByteBuffer) -> Void) {
        prepareAppend(payloadLength: length)
        buffer.writeInteger(UInt8(ascii: "$"))
        buffer.writeDecimal(length)
        buffer.writeStaticString("\r\n")
        writePayload(&buffer)
        buffer.writeStaticString("\r\n")
        count += 1
        writeHeader()
    }

    private mutating func prepareAppend(payloadLength: Int) {
        buffer.reserveCapacity(minimumWritableBytes: payloadLength + 24)
    }

    /// Rewrites `*<count>\r\n` right before the first argument and moves the reader index onto it.
    private mutating func writeHeader() {
        var header: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let length = withUnsafeMutableBytes(of: &header) { raw -> Int in
            var digits = count
            var end = raw.count
            raw[end - 1] = UInt8(ascii: "\n")
            raw[end - 2] = UInt8(ascii: "\r")
            end -= 2
            repeat {
                end -= 1
                raw[end] = UInt8(ascii: "0") + UInt8(digits % 10)
                digits /= 10
            } while digits > 0
            end -= 1
            raw[end] = UInt8(ascii: "*")
            return raw.count - end
        }
        let start = RESPCommand.headerSpace - length
        withUnsafeBytes(of: &header) { raw in
            _ = buffer.setBytes(UnsafeRawBufferPointer(rebasing: raw[(raw.count - length)...]), at: start)
        }
        buffer.moveReaderIndex(to: start)
    }

    /// The command name as text (for logs and errors; never arguments, which may hold secrets).
    public var name: String {
        var copy = buffer
        guard let token = try? RESPToken(consuming: &copy), let first = token.array?.first?.string else { return "" }
        return first.uppercased()
    }
}

extension ByteBuffer {
    @inlinable
    mutating func writeDecimal(_ value: Int) {
        if value < 10 {
            writeInteger(UInt8(ascii: "0") + UInt8(value))
        } else {
            writeString(String(value))
        }
    }
}

/// A value that can be appended to a command as one or more bulk strings.
public protocol RESPArgument {
    /// Appends this value's bulk string(s) to the command.
    func encode(into command: inout RESPCommand)
}

extension String: RESPArgument {
    public func encode(into command: inout RESPCommand) { command.appendBulk(self) }
}

extension Substring: RESPArgument {
    public func encode(into command: inout RESPCommand) { command.appendBulk(String(self)) }
}

extension ByteBuffer: RESPArgument {
    public func encode(into command: inout RESPCommand) { command.appendBulk(self) }
}

extension Int: RESPArgument {
    public func encode(into command: inout RESPCommand) { command.appendBulk(String(self)) }
}

extension Double: RESPArgument {
    public func encode(into command: inout RESPCommand) {
        if self == .infinity {
            command.appendBulk("+inf")
        } else if self == -.infinity {
            command.appendBulk("-inf")
        } else {
            command.appendBulk(String(self))
        }
    }
}

extension Array: RESPArgument where Element: RESPArgument {
    public func encode(into command: inout RESPCommand) {
        for element in self { element.encode(into: &command) }
    }
}

/// Raw bytes as one bulk string (a `[UInt8]` would otherwise be read as many integer arguments).
public struct RESPBytes: RESPArgument, Sendable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public func encode(into command: inout RESPCommand) { command.appendBulk(bytes) }
}
