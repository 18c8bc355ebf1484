import CJansson

extension JSONValue {
    /// Parses JSON text from bytes; contiguous collections are read in place, without a copy.
    @inlinable
    public init(parsing bytes: some Collection<UInt8>) throws(JSONError) {
        self = try Self.parse(contentsOf: bytes, rejectingDuplicateKeys: false).get()
    }

    /// Parses JSON text from a string's UTF-8, in place when the string is native.
    public init(parsing text: String) throws(JSONError) {
        let parsed = text.utf8.withContiguousStorageIfAvailable { buffer in
            Self.parse(UnsafeRawBufferPointer(buffer))
        }
        if let parsed {
            self = try parsed.get()
        } else {
            var text = text
            self = try text.withUTF8 { Self.parse(UnsafeRawBufferPointer($0)) }.get()
        }
    }

    /// Parses JSON text from raw memory.
    public init(parsing buffer: UnsafeRawBufferPointer) throws(JSONError) {
        self = try Self.parse(buffer).get()
    }

    /// Parses JSON text as ``init(parsing:)-(some Collection<UInt8>)`` does, but fails where an object names a key
    /// twice (at any depth; keys compared after unescaping), where that initializer keeps the last value.
    @inlinable
    public init(parsingRejectingDuplicateKeys bytes: some Collection<UInt8>) throws(JSONError) {
        self = try Self.parse(contentsOf: bytes, rejectingDuplicateKeys: true).get()
    }

    /// A contiguous collection is read in place; any other is copied once.
    @inlinable
    static func parse(
        contentsOf bytes: some Collection<UInt8>,
        rejectingDuplicateKeys: Bool
    ) -> Result<JSONValue, JSONError> {
        bytes.withContiguousStorageIfAvailable { buffer in
            Self.parse(UnsafeRawBufferPointer(buffer), rejectingDuplicateKeys: rejectingDuplicateKeys)
        } ?? Array(bytes).withUnsafeBytes { Self.parse($0, rejectingDuplicateKeys: rejectingDuplicateKeys) }
    }

    @usableFromInline
    static func parse(
        _ buffer: UnsafeRawBufferPointer,
        rejectingDuplicateKeys: Bool = false
    ) -> Result<JSONValue, JSONError> {
        var flags = JSON_DECODE_ANY | JSON_ALLOW_NUL
        if rejectingDuplicateKeys { flags |= JSON_REJECT_DUPLICATES }
        // jansson refuses a NULL buffer even when empty: hand it a real (empty) one so it reports
        // the same "end of file" error as for any other empty input.
        guard let base = buffer.baseAddress else {
            var empty: CChar = 0
            return Self.parse(bytes: &empty, count: 0, flags: flags)
        }
        return Self.parse(bytes: base.assumingMemoryBound(to: CChar.self), count: buffer.count, flags: flags)
    }

    private static func parse(bytes: UnsafePointer<CChar>, count: Int, flags: Int32) -> Result<JSONValue, JSONError> {
        // jansson's tree lives in the thread's arena only until it is converted.
        withJanssonArena {
            var error = json_error_t()
            guard let root = json_loadb(bytes, count, Int(flags), &error) else {
                return .failure(JSONError(jansson: error))
            }
            return .success(JSONValue(jansson: root))
        }
    }
}

extension JSONValue {
    /// A container being filled while converting a jansson tree (depth-first, without recursion).
    private struct PendingContainer {
        var source: UnsafeMutablePointer<json_t>
        /// Next array index, unused for objects.
        var index = 0
        var count: Int
        /// Current member iterator; nil for arrays.
        var iterator: UnsafeMutableRawPointer?
        var elements: [JSONValue] = []
        var keys: [String] = []
    }

    /// Containers nested this deep fit the conversion's first stack (a Celery envelope nests three deep), so it is
    /// allocated once instead of growing 1, 2, 4, ...
    private static let typicalDepth = 8

    /// Converts a jansson tree (borrowed, not released here).
    init(jansson root: UnsafeMutablePointer<json_t>) {
        var stack: [PendingContainer] = []
        var node = root
        descend: while true {
            var value: JSONValue
            switch node.pointee.type {
            case JSON_NULL:
                value = .null
            case JSON_TRUE:
                value = .bool(true)
            case JSON_FALSE:
                value = .bool(false)
            case JSON_INTEGER:
                value = .int(Int(json_integer_value(node)))
            case JSON_REAL:
                value = .double(json_real_value(node))
            case JSON_STRING:
                value = .string(Self.string(json_string_value(node), count: json_string_length(node)))
            case JSON_ARRAY:
                let count = json_array_size(node)
                if count == 0 {
                    value = .array([])
                } else {
                    var pending = PendingContainer(source: node, count: count)
                    pending.elements.reserveCapacity(count)
                    if stack.isEmpty { stack.reserveCapacity(Self.typicalDepth) }
                    stack.append(pending)
                    node = json_array_get(node, 0)
                    continue descend
                }
            case JSON_OBJECT:
                let count = json_object_size(node)
                guard count > 0, let iterator = json_object_iter(node) else {
                    value = .object([:])
                    break
                }
                var pending = PendingContainer(source: node, count: count, iterator: iterator)
                pending.elements.reserveCapacity(count)
                pending.keys.reserveCapacity(count)
                pending.keys.append(Self.key(iterator))
                if stack.isEmpty { stack.reserveCapacity(Self.typicalDepth) }
                stack.append(pending)
                node = json_object_iter_value(iterator)
                continue descend
            default:
                preconditionFailure("jansson returned an unknown json_type \(node.pointee.type)")
            }

            // Attach the finished value to its parent; move to the next sibling or finish the parent.
            while let top = stack.indices.last {
                stack[top].elements.append(value)
                if let iterator = stack[top].iterator {
                    if let next = json_object_iter_next(stack[top].source, iterator) {
                        stack[top].iterator = next
                        stack[top].keys.append(Self.key(next))
                        node = json_object_iter_value(next)
                        continue descend
                    }
                    let finished = stack.removeLast()
                    // jansson's objects never hold a key twice.
                    value = .object(JSONObject(uncheckedUniqueKeys: finished.keys, values: finished.elements))
                } else {
                    stack[top].index += 1
                    if stack[top].index < stack[top].count {
                        node = json_array_get(stack[top].source, stack[top].index)
                        continue descend
                    }
                    value = .array(stack.removeLast().elements)
                }
            }
            self = value
            return
        }
    }

    private static func key(_ iterator: UnsafeMutableRawPointer) -> String {
        Self.string(json_object_iter_key(iterator), count: json_object_iter_key_len(iterator))
    }

    private static func string(_ pointer: UnsafePointer<CChar>?, count: Int) -> String {
        guard let pointer, count > 0 else { return "" }
        // jansson has already validated the UTF-8; decoding re-checks it cheaply and never repairs here.
        return pointer.withMemoryRebound(to: UInt8.self, capacity: count) {
            String(decoding: UnsafeBufferPointer(start: $0, count: count), as: UTF8.self)
        }
    }
}
