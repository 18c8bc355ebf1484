import CJansson

extension JSONValue {
    /// Compact JSON text in UTF-8; the value must be at most `maximumDepth` deep (every parsed value is).
    ///
    /// A deeper value is a programmer error and stops the process; use `serialize()` for values built from
    /// untrusted structure.
    public func serialized() -> [UInt8] {
        do {
            return try self.serialize()
        } catch {
            preconditionFailure("\(error)")
        }
    }

    /// Compact JSON text as a `String`; the value must be at most `maximumDepth` deep.
    public func serializedString() -> String {
        String(decoding: self.serialized(), as: UTF8.self)
    }

    /// Compact JSON text in UTF-8, or an error if the value is nested deeper than `maximumDepth`.
    public func serialize() throws(JSONError) -> [UInt8] {
        guard let root = self.makeJansson(maximumDepth: Self.maximumDepth) else {
            throw JSONError(message: "value nested deeper than \(Self.maximumDepth) arrays or objects")
        }
        defer { json_decref(root) }
        var output: [UInt8] = []
        output.reserveCapacity(128)
        // 17 significant digits make every finite double read back bit for bit.
        let flags = Int(JSON_COMPACT | JSON_ENCODE_ANY) | Int((17 & 0x1F) << 11)  // JSON_REAL_PRECISION(17)
        let status = withUnsafeMutablePointer(to: &output) { output in
            json_dump_callback(
                root,
                { chunk, size, context in
                    guard let chunk, let context else { return -1 }
                    let output = context.assumingMemoryBound(to: [UInt8].self)
                    output.pointee.append(contentsOf: UnsafeRawBufferPointer(start: chunk, count: size))
                    return 0
                },
                output,
                flags
            )
        }
        guard status == 0 else {
            // Only out-of-memory reaches here: every value this module builds is encodable.
            throw JSONError(message: "jansson could not serialize the value")
        }
        return output
    }
}

extension JSONValue {
    /// A container whose children are being converted (depth-first, without recursion).
    private struct BuildFrame {
        /// The jansson container; owned by the frame until attached to its parent.
        var target: UnsafeMutablePointer<json_t>
        var elements: [JSONValue]
        var object: JSONObject
        var index = 0
    }

    /// Builds a jansson tree (a new reference), or nil if deeper than `maximumDepth`.
    func makeJansson(maximumDepth: Int) -> UnsafeMutablePointer<json_t>? {
        var stack: [BuildFrame] = []
        var current = self
        descend: while true {
            var built: UnsafeMutablePointer<json_t>
            switch current {
            case .null:
                built = json_null()
            case .bool(let bool):
                built = bool ? json_true() : json_false()
            case .int(let int):
                built = json_integer(json_int_t(int))
            case .double(let double):
                // JSON has no NaN or infinity: they are written as null (see the module notes).
                built = double.isFinite ? json_real(double) : json_null()
            case .string(let string):
                built = Self.makeString(string)
            case .array(let elements):
                guard stack.count < maximumDepth else { return Self.release(stack) }
                built = json_array()
                if let first = elements.first {
                    stack.append(BuildFrame(target: built, elements: elements, object: [:]))
                    current = first
                    continue descend
                }
            case .object(let object):
                guard stack.count < maximumDepth else { return Self.release(stack) }
                built = json_object()
                if let first = object.values.first {
                    stack.append(BuildFrame(target: built, elements: [], object: object))
                    current = first
                    continue descend
                }
            }

            // Attach the finished node to its parent; move to the next sibling or finish the parent.
            while let top = stack.indices.last {
                let index = stack[top].index
                let parent = stack[top].target
                stack[top].index += 1
                if stack[top].elements.isEmpty {
                    Self.setMember(parent, key: stack[top].object.keys[index], value: built)
                    if index + 1 < stack[top].object.count {
                        current = stack[top].object.values[index + 1]
                        continue descend
                    }
                } else {
                    json_array_append_new(parent, built)
                    if index + 1 < stack[top].elements.count {
                        current = stack[top].elements[index + 1]
                        continue descend
                    }
                }
                built = stack.removeLast().target
            }
            return built
        }
    }

    private static func release(_ stack: [BuildFrame]) -> UnsafeMutablePointer<json_t>? {
        for frame in stack {
            json_decref(frame.target)
        }
        return nil
    }

    private static func makeString(_ string: String) -> UnsafeMutablePointer<json_t> {
        // Swift strings are valid UTF-8: skip jansson's re-validation (`_nocheck`); the length keeps U+0000.
        Self.withUTF8(string) { json_stringn_nocheck($0, $1) }
    }

    private static func setMember(
        _ object: UnsafeMutablePointer<json_t>,
        key: String,
        value: UnsafeMutablePointer<json_t>
    ) {
        // The object steals `value`; keys are unique in a JSONObject, so no member is replaced.
        _ = Self.withUTF8(key) { json_object_setn_new_nocheck(object, $0, $1, value) }
    }

    /// Calls `body` with the string's UTF-8 bytes, never with a NULL pointer (jansson rejects NULL even if empty).
    private static func withUTF8<Result>(
        _ string: String,
        _ body: (UnsafePointer<CChar>, Int) -> Result
    ) -> Result {
        if string.isEmpty {
            return body("", 0)
        }
        if let result = string.utf8.withContiguousStorageIfAvailable({ utf8 in
            utf8.withMemoryRebound(to: CChar.self) { body($0.baseAddress!, $0.count) }
        }) {
            return result
        }
        var string = string
        return string.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { body($0.baseAddress!, $0.count) }
        }
    }
}
