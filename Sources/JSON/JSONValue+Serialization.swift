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
        // jansson's tree lives in the thread's arena only until it is dumped.
        try withJanssonArena { () -> Result<[UInt8], JSONError> in
            guard let (root, estimate) = self.makeJansson(maximumDepth: Self.maximumDepth) else {
                return .failure(JSONError(message: "value nested deeper than \(Self.maximumDepth) arrays or objects"))
            }
            return Self.dump(root, estimate: estimate)
        }.get()
    }

    private static func dump(_ root: UnsafeMutablePointer<json_t>, estimate: Int) -> Result<[UInt8], JSONError> {
        // json_dumpb into a buffer sized from an estimate: one pass in the usual case, a second one with the exact
        // size when escapes made the text longer. (Appending each of jansson's small chunks to an Array from
        // json_dump_callback costs twice the dump itself.)
        let first = Self.dump(root, capacity: estimate)
        if first.needed > 0, first.needed <= estimate {
            return .success(first.text)
        }
        let second = Self.dump(root, capacity: first.needed)
        guard first.needed > 0, second.needed == first.needed else {
            // Only out-of-memory reaches here: every tree this module builds is encodable.
            return .failure(JSONError(message: "jansson could not serialize the value"))
        }
        return .success(second.text)
    }

    /// Dumps into a new array of at most `capacity` bytes: the text if it fits (else empty), and the size it needs
    /// (0 on failure; no JSON text is empty).
    private static func dump(_ root: UnsafeMutablePointer<json_t>, capacity: Int) -> (text: [UInt8], needed: Int) {
        // 17 significant digits make every finite double read back bit for bit.
        let flags = Int(JSON_COMPACT | JSON_ENCODE_ANY) | Int((17 & 0x1F) << 11)  // JSON_REAL_PRECISION(17)
        var needed = 0
        let text = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            needed = buffer.withMemoryRebound(to: CChar.self) { json_dumpb(root, $0.baseAddress, $0.count, flags) }
            count = needed <= capacity ? needed : 0
        }
        return (text, needed)
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

    /// Builds a jansson tree and estimates its compact text's size; nil if deeper than `maximumDepth`. Called inside
    /// `withJanssonArena`, which releases the tree, or what was built of it, when the scope ends.
    private func makeJansson(maximumDepth: Int) -> (tree: UnsafeMutablePointer<json_t>, estimatedSize: Int)? {
        var stack: [BuildFrame] = []
        var current = self
        // Exact but for escapes in strings and digits of numbers (a little over); a comma or colon per value.
        var estimate = 0
        descend: while true {
            var built: UnsafeMutablePointer<json_t>
            switch current {
            case .null:
                built = json_null()
                estimate += 5
            case .bool(let bool):
                built = bool ? json_true() : json_false()
                estimate += 6
            case .int(let int):
                built = json_integer(json_int_t(int))
                // 77/256 > log10(2): at least the number of decimal digits, plus sign and separator.
                estimate += (Int.bitWidth - int.magnitude.leadingZeroBitCount) * 77 / 256 + 3
            case .double(let double):
                // JSON has no NaN or infinity: they are written as null (see the module notes).
                built = double.isFinite ? json_real(double) : json_null()
                estimate += 25
            case .string(let string):
                built = Self.makeString(string)
                estimate += string.utf8.count + 3
            case .array(let elements):
                guard stack.count < maximumDepth else { return nil }
                built = json_array()
                estimate += 3
                if let first = elements.first {
                    stack.append(BuildFrame(target: built, elements: elements, object: [:]))
                    current = first
                    continue descend
                }
            case .object(let object):
                guard stack.count < maximumDepth else { return nil }
                built = json_object()
                estimate += 3
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
                    let key = stack[top].object.keys[index]
                    estimate += key.utf8.count + 3
                    Self.setMember(parent, key: key, value: built)
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
            return (built, estimate)
        }
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
