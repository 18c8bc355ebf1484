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

    /// A command from its name and arguments of any argument types. Inlinable, so each call site gets a copy made
    /// for its own argument types instead of the generic one that looks up their metadata at every call.
    @inlinable
    public init<each A: RESPArgument>(_ name: String, _ arguments: repeat each A) {
        self.init(name)
        for argument in repeat each arguments {
            argument.encode(into: &self)
        }
    }

    /// Appends arguments (an array argument appends each of its elements).
    @inlinable
    public mutating func append(_ argument: some RESPArgument) {
        argument.encode(into: &self)
    }

    /// Appends one bulk string from raw bytes.
    public mutating func appendBulk(_ bytes: some Collection<UInt8>) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { appendBulk(UnsafeRawBufferPointer($0)) }
        if done == nil { Array(bytes).withUnsafeBytes { appendBulk($0) } }
    }

    /// Appends one bulk string from a string's UTF-8.
    public mutating func appendBulk(_ string: String) {
        var string = string
        string.withUTF8 { appendBulk(UnsafeRawBufferPointer($0)) }
    }

    /// Appends one bulk string from a buffer's readable bytes.
    public mutating func appendBulk(_ bytes: ByteBuffer) {
        bytes.withUnsafeReadableBytes { appendBulk($0) }
    }

    /// Appends an integer's decimal digits as one bulk string (without making a `String` of them).
    public mutating func appendBulk(decimal value: Int) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for Int.min's 20 characters
        withUnsafeMutableBytes(of: &digits) { raw in
            let length = Self.writeDecimal(value, endingAt: raw.count, in: raw)
            appendBulk(UnsafeRawBufferPointer(rebasing: raw[(raw.count - length)...]))
        }
    }

    /// `$<length>\r\n<payload>\r\n` written in one pass into the buffer, then the array header rewritten for the new
    /// count.
    public mutating func appendBulk(_ payload: UnsafeRawBufferPointer) {
        let length = payload.count
        // "$", at most 20 digits, CRLF, the payload, CRLF.
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length + 25) { out in
            var prefix: (UInt64, UInt64, UInt64) = (0, 0, 0)
            let prefixLength = withUnsafeMutableBytes(of: &prefix) { raw -> Int in
                raw[raw.count - 2] = UInt8(ascii: "\r")
                raw[raw.count - 1] = UInt8(ascii: "\n")
                let digits = Self.writeDecimal(length, endingAt: raw.count - 2, in: raw)
                let start = raw.count - 2 - digits - 1
                raw[start] = UInt8(ascii: "$")
                out.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: raw.count - start)
                return raw.count - start
            }
            if length > 0 {
                (out.baseAddress! + prefixLength).copyMemory(from: payload.baseAddress!, byteCount: length)
            }
            out[prefixLength + length] = UInt8(ascii: "\r")
            out[prefixLength + length + 1] = UInt8(ascii: "\n")
            return prefixLength + length + 2
        }
        count += 1
        writeHeader()
    }

    /// Writes `value` in decimal so that it ends right before `end`; returns how many bytes it took.
    private static func writeDecimal(_ value: Int, endingAt end: Int, in raw: UnsafeMutableRawBufferPointer) -> Int {
        var magnitude = value.magnitude
        var index = end
        repeat {
            index -= 1
            raw[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
            magnitude /= 10
        } while magnitude > 0
        if value < 0 {
            index -= 1
            raw[index] = UInt8(ascii: "-")
        }
        return end - index
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
    public func encode(into command: inout RESPCommand) { command.appendBulk(decimal: self) }
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
