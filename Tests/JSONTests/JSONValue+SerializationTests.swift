import JSON
import Testing

@Suite("JSONValue serialization")
struct JSONValueSerializationTests {
    @Test(arguments: [
        (JSONValue.double(.nan), "null"),
        (.double(.infinity), "null"),
        (.double(-.infinity), "null"),
        ([1, .double(.nan), 2] as JSONValue, "[1,null,2]"),
        (["": 1, "a b": "c"] as JSONValue, #"{"":1,"a b":"c"}"#),
        (["b": 1, "a": 2, "c": [:]] as JSONValue, #"{"b":1,"a":2,"c":{}}"#),
        (.string("</script>/"), #""</script>/""#),
        (.string("\u{7f}\u{2028}\u{fffd}"), "\"\u{7f}\u{2028}\u{fffd}\""),
        (.int(Int.min), "-9223372036854775808"),
        ([[[[]]]] as JSONValue, "[[[[]]]]"),
    ])
    func writesCompactText(value: JSONValue, text: String) throws {
        #expect(value.serializedString() == text)
        #expect(try value.serialize() == Array(text.utf8))
        #expect(value.description == text)
    }

    @Test func keysAndStringsWithNULRoundTripThroughSerialization() throws {
        let value: JSONValue = ["k": "a\u{0}b", "x": ["\u{0}", ""]]
        let text = value.serializedString()
        #expect(text == #"{"k":"a\u0000b","x":["\u0000",""]}"#)
        #expect(try JSONValue(parsing: text) == value)
    }

    @Test func keyWithNULIsWrittenAndRejectedOnParsingByJansson() throws {
        // jansson 2.14 writes such a key but refuses it when parsing ("NUL byte in object key not supported").
        let value: JSONValue = ["a\u{0}b": 1]
        #expect(value.serializedString() == #"{"a\u0000b":1}"#)
        #expect(throws: JSONError.self) { try JSONValue(parsing: value.serialized()) }
    }

    /// Escapes make the text longer than the size estimated from the strings: the exact size is dumped again.
    @Test(arguments: [0, 1, 7, 100, 10_000])
    func escapeHeavyStringsAreWrittenWhole(count: Int) throws {
        let string = String(repeating: "\u{0}\u{1f}\"\\", count: count)
        let value: JSONValue = [.string(string), ["\u{1}": .string(string)]]
        let text = value.serializedString()
        let escaped = String(repeating: #"\u0000\u001F\"\\"#, count: count)
        #expect(text == #"[""# + escaped + #"",{"\u0001":""# + escaped + #""}]"#)
        #expect(try JSONValue(parsing: text) == [.string(string), .object(["\u{1}": .string(string)])])
    }

    @Test func insertionOrderIsKept() {
        var object = JSONObject()
        for key in ["zeta", "alpha", "mu", "beta"] {
            object[key] = .string(key)
        }
        object["alpha"] = 1  // replacing keeps the place
        #expect(JSONValue.object(object).serializedString() == #"{"zeta":"zeta","alpha":1,"mu":"mu","beta":"beta"}"#)
    }

    @Test func deeperThanTheLimitIsAnErrorFromSerialize() throws {
        var value: JSONValue = "leaf"
        for level in 1...JSONValue.maximumDepth {
            value = level.isMultiple(of: 2) ? [value] : ["k": value]
        }
        // Exactly maximumDepth containers: fine.
        #expect(try value.serialize().count > 0)
        let tooDeep: JSONValue = [value]
        let error = try #require(throws: JSONError.self) { try tooDeep.serialize() }
        #expect(error.message.contains("deeper than 2048"))
        #expect(error.description == "JSON error: value nested deeper than 2048 arrays or objects")
    }

    @Test func fiveThousandLevelsIsAnErrorFromSerialize() throws {
        var value: JSONValue = 1
        for _ in 0..<5000 {
            value = [value]
        }
        #expect(throws: JSONError.self) { try value.serialize() }
    }

    @Test func mixedDocumentRoundTrips() throws {
        let value: JSONValue = [
            "id": "5d5c6c3c-4b1a-4c9e-9f0e-2b7c8a9d1e2f",
            "args": [2, 3.5, "x", nil, true, [], [:]],
            "kwargs": ["nested": ["deeper": [1, [2, [3, ["four": 4]]]]]],
            "big": .int(Int.max),
            "small": .int(Int.min),
            "unicode": "\u{0}é\u{301}😀\u{10ffff}",
        ]
        let parsed = try JSONValue(parsing: value.serialized())
        #expect(parsed == value)
        #expect(parsed.serialized() == value.serialized())
    }
}
