import NIOCore

extension RESPToken {
    /// True for `-ERR ...` and `!` blob errors.
    public var isError: Bool { kind == .simpleError || kind == .blobError }

    /// True for RESP2 null bulk/array and RESP3 null.
    public var isNull: Bool {
        if case .null = value { return true }
        return false
    }

    /// The text of an error reply (`ERR unknown command ...`), nil for other frames.
    public var errorMessage: String? {
        // Checked on every reply: look at the type byte before decoding the frame.
        guard isError else { return nil }
        switch value {
        case .simpleError(let b), .blobError(let b): return String(buffer: b)
        default: return nil
        }
    }

    /// The bytes of a string-like frame (simple, bulk, verbatim, big number), nil otherwise.
    public var bytes: ByteBuffer? {
        switch value {
        case .simpleString(let b), .bulkString(let b), .verbatimString(let b), .bigNumber(let b): return b
        default: return nil
        }
    }

    /// The text of a string-like frame, or an integer or double rendered as text.
    public var string: String? {
        switch value {
        case .simpleString(let b), .bulkString(let b), .verbatimString(let b), .bigNumber(let b):
            return String(buffer: b)
        case .integer(let i): return String(i)
        case .double(let d): return String(d)
        default: return nil
        }
    }

    /// An integer frame, or a string frame holding a decimal integer (RESP2 sends many numbers as strings).
    public var int: Int? {
        switch value {
        case .integer(let i): return Int(i)
        case .simpleString(let b), .bulkString(let b): return RESPToken.parseInteger(b).map { Int($0) }
        case .boolean(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// A double frame, or an integer or numeric string frame.
    public var double: Double? {
        switch value {
        case .double(let d): return d
        case .integer(let i): return Double(i)
        case .simpleString(let b), .bulkString(let b): return Double(String(buffer: b))
        default: return nil
        }
    }

    /// The elements of an array, set or push frame, nil otherwise (including null arrays).
    public var array: [RESPToken]? {
        switch value {
        case .array(let a), .set(let a), .push(let a): return a.elements
        default: return nil
        }
    }

    /// Key-value pairs from a RESP3 map, or from a RESP2 flat array of alternating keys and values.
    public var pairs: [(key: RESPToken, value: RESPToken)]? {
        switch value {
        case .map(let m), .attribute(let m): return Swift.Array(m)
        case .array(let a):
            let items = a.elements
            guard items.count % 2 == 0 else { return nil }
            return stride(from: 0, to: items.count, by: 2).map { (items[$0], items[$0 + 1]) }
        default: return nil
        }
    }
}
