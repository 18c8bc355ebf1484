import JSON
import Testing

@Suite("JSONValue parsing")
struct JSONValueParsingTests {
    /// Text, the value it parses to, and the compact text jansson writes back.
    @Test(arguments: [
        ("0", JSONValue.int(0), "0"),
        ("-0", .int(0), "0"),
        ("9223372036854775807", .int(Int.max), "9223372036854775807"),
        ("-9223372036854775808", .int(Int.min), "-9223372036854775808"),
        ("0.1", .double(0.1), "0.10000000000000001"),
        ("1e300", .double(1e300), "1.0000000000000001e300"),
        ("-0.0", .double(-0.0), "-0.0"),
        ("5e-324", .double(.leastNonzeroMagnitude), "4.9406564584124654e-324"),
        ("1.0", .double(1), "1.0"),
        ("1E2", .double(100), "100.0"),
        ("true", .bool(true), "true"),
        ("false", .bool(false), "false"),
        ("null", .null, "null"),
        (#""""#, .string(""), #""""#),
        (#""a\u0000b""#, .string("a\u{0}b"), #""a\u0000b""#),
        (#""\ud83d\ude00""#, .string("😀"), #""😀""#),
        (
            #""é e\u0301 ☃ 中文 👩‍👩‍👧""#,
            .string("é e\u{301} ☃ 中文 👩‍👩‍👧"),
            "\"é e\u{301} ☃ 中文 👩‍👩‍👧\""
        ),
        (#""\"\\\/\b\f\n\r\t\u001f""#, .string("\"\\/\u{8}\u{c}\n\r\t\u{1f}"), #""\"\\/\b\f\n\r\t\u001F""#),
        ("[]", .array([]), "[]"),
        ("{}", .object([:]), "{}"),
        (" [ 1 , [ [ ] , { } ] ] ", [1, [[], [:]]] as JSONValue, "[1,[[],{}]]"),
        (
            #"{"z":1,"a":{"y":[true,null],"b":"c"},"m":2.5}"#,
            ["z": 1, "a": ["y": [true, nil], "b": "c"], "m": 2.5] as JSONValue,
            #"{"z":1,"a":{"y":[true,null],"b":"c"},"m":2.5}"#
        ),
        (#"{"a":1,"a":2,"b":3}"#, ["a": 2, "b": 3] as JSONValue, #"{"a":2,"b":3}"#),
    ])
    func roundTrips(text: String, value: JSONValue, written: String) throws {
        let parsed = try JSONValue(parsing: text)
        #expect(parsed == value)
        #expect(parsed.serializedString() == written)
        #expect(try JSONValue(parsing: written) == value)
        if case .double(let double) = value {
            #expect(try JSONValue(parsing: written).doubleValue?.bitPattern == double.bitPattern)
        }
    }

    @Test(arguments: [
        0.1, 1e300, -0.0, .leastNonzeroMagnitude, .pi, 1.0 / 3.0, .greatestFiniteMagnitude, .leastNormalMagnitude,
        -123.456e-7, 2e22,
    ])
    func doublesRoundTripBitForBit(double: Double) throws {
        let parsed = try JSONValue(parsing: JSONValue.double(double).serialized())
        #expect(parsed.doubleValue?.bitPattern == double.bitPattern)
    }

    @Test func everyInputFormParsesTheSame() throws {
        let text = #"{"k":[1,"x"]}"#
        let bytes = Array(text.utf8)
        let expected: JSONValue = ["k": [1, "x"]]
        #expect(try JSONValue(parsing: text) == expected)
        #expect(try JSONValue(parsing: bytes) == expected)
        #expect(try JSONValue(parsing: ([0x20] + bytes + [0x20])[1...]) == expected)
        #expect(try JSONValue(parsing: Substring(text).utf8) == expected)
        #expect(try JSONValue(parsing: bytes.lazy.map { $0 }) == expected)  // not contiguous
        #expect(try bytes.withUnsafeBytes { buffer throws(JSONError) in try JSONValue(parsing: buffer) } == expected)
    }

    /// `parsingRejectingDuplicateKeys` fails where `parsing` keeps a repeated key's last value (at its first place).
    @Test(arguments: [
        (#"{"a":1,"b":2,"a":3}"#, #"{"a":3,"b":2}"#),
        (#"{"x":{"a":1,"a":2}}"#, #"{"x":{"a":2}}"#),
        (#"[{"a":1},{"a":1,"\u0061":2}]"#, #"[{"a":1},{"a":2}]"#),
    ])
    func duplicateKeysCanBeRefused(text: String, lastWins: String) throws {
        #expect(try JSONValue(parsing: text) == JSONValue(parsing: lastWins))
        #expect(throws: JSONError.self) { try JSONValue(parsingRejectingDuplicateKeys: Array(text.utf8)) }
    }

    @Test func distinctKeysPassTheDuplicateCheck() throws {
        let text = #"{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}"#
        #expect(try JSONValue(parsingRejectingDuplicateKeys: Array(text.utf8)) == JSONValue(parsing: text))
        #expect(
            try JSONValue(parsingRejectingDuplicateKeys: Array(text.utf8).lazy.map { $0 }) == JSONValue(parsing: text)
        )
    }

    @Test func keyOrderIsPreserved() throws {
        let keys = (0..<500).map { "key\(($0 * 7919) % 500)" }
        let text = "{" + keys.map { #""\#($0)":0"# }.joined(separator: ",") + "}"
        let parsed = try JSONValue(parsing: text)
        #expect(parsed.objectValue.map { Array($0.keys) } == keys)
        #expect(parsed.serializedString() == text)
    }

    /// Input jansson rejects: an error with a position, never a crash.
    @Test(arguments: [
        ("", "empty"),
        ("   ", "only whitespace"),
        ("[1,2", "truncated array"),
        (#"{"a":"#, "truncated object"),
        (#""abc"#, "truncated string"),
        ("[1,]", "trailing comma"),
        ("[1] x", "trailing garbage"),
        ("{} {}", "two values"),
        ("NaN", "NaN literal"),
        ("[Infinity]", "Infinity literal"),
        ("-Infinity", "-Infinity literal"),
        ("[nan]", "nan literal"),
        (#""\ud800""#, "lone high surrogate escape"),
        (#""\udc00""#, "lone low surrogate escape"),
        (#""\ud83dx""#, "high surrogate escape then text"),
        ("{a:1}", "unquoted key"),
        ("['a']", "single quotes"),
        ("[01]", "leading zero"),
        ("[1.]", "bare decimal point"),
        ("99999999999999999999", "integer beyond 64 bits"),
        ("-9223372036854775809", "integer below Int64.min"),
        ("1e400", "real overflow"),
        (#""a\qb""#, "invalid escape"),
        ("\"a\u{1}b\"", "raw control character"),
        ("x", "unknown token"),
    ])
    func rejectsMalformedText(text: String, why: String) {
        let error = #expect(throws: JSONError.self, "\(why)") { try JSONValue(parsing: text) }
        guard let error else { return }
        #expect(!error.message.isEmpty)
        #expect(error.position >= 0 && error.position <= text.utf8.count)
        #expect(error.description.hasPrefix("invalid JSON at line "))
    }

    @Test(arguments: [
        ([0xFF] as [UInt8], "0xff"),
        ([0x22, 0xFF, 0x22], "0xff in a string"),
        ([0x22, 0xC3, 0x22], "truncated sequence"),
        ([0x22, 0xED, 0xA0, 0x80, 0x22], "encoded surrogate"),
        ([0x22, 0xC0, 0xAF, 0x22], "overlong encoding"),
        ([0x5B, 0x00, 0x5D], "raw NUL byte"),
        ([0xEF, 0xBB, 0xBF, 0x31], "byte-order mark"),
    ])
    func rejectsInvalidUTF8(bytes: [UInt8], why: String) {
        let error = #expect(throws: JSONError.self, "\(why)") { try JSONValue(parsing: bytes) }
        #expect((error?.position ?? -1) >= 0)
    }

    @Test func errorCarriesJanssonPosition() throws {
        let error = try #require(throws: JSONError.self) { try JSONValue(parsing: "[1,\n  2,\n  x]") }
        #expect(error.line == 3)
        #expect(error.column >= 3)
        #expect(error.position >= 11)
        #expect(error.message.contains("x"))
        let prefix = "invalid JSON at line 3, column \(error.column) (byte \(error.position)): "
        #expect(error.description.hasPrefix(prefix))
    }

    @Test func tooBigIntegerSaysSo() throws {
        let error = try #require(throws: JSONError.self) { try JSONValue(parsing: "[18446744073709551616]") }
        #expect(error.message.contains("too big integer"))
        #expect(error.message.contains("64-bit"))
    }

    @Test func nestingUpToTheLimitParses() throws {
        let depth = JSONValue.maximumDepth
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        let parsed = try JSONValue(parsing: text)
        #expect(try parsed.serialize() == Array(text.utf8))
        #expect(parsed.serializedString() == text)
    }

    @Test func nestingBeyondTheLimitIsAnError() throws {
        let depth = JSONValue.maximumDepth + 1
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        let error = try #require(throws: JSONError.self) { try JSONValue(parsing: text) }
        #expect(error.message.contains("depth"))
    }

    @Test(arguments: ["[", "{\"a\":", "[{\"a\":"])
    func hundredThousandLevelsIsAnErrorNotACrash(opening: String) throws {
        let text = String(repeating: opening, count: 100_000)
        let error = try #require(throws: JSONError.self) { try JSONValue(parsing: text) }
        #expect(error.message.contains("depth"))
        #expect(error.position > 0)
    }

    @Test func millionElementArrayRoundTrips() throws {
        let elements = (0..<1_000_000).map { JSONValue.int($0 * 7 - 3_000_000) }
        let value = JSONValue.array(elements)
        let bytes = value.serialized()
        let parsed = try JSONValue(parsing: bytes)
        #expect(parsed == value)
        #expect(parsed.serialized() == bytes)
    }

    @Test func tenMegabyteStringRoundTrips() throws {
        let chunk = "abc\u{0}é😀\"\\\n"
        let string = String(repeating: chunk, count: 10_000_000 / chunk.utf8.count)
        let value: JSONValue = ["big": .string(string)]
        let parsed = try JSONValue(parsing: value.serialized())
        #expect(parsed["big"]?.stringValue == string)
    }
}
