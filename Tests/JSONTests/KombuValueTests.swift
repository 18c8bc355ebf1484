import JSON
import Testing

@Suite("KombuValue")
struct KombuValueTests {
    /// Values and the text `kombu.utils.json.dumps(…, separators=(",", ":"), ensure_ascii=False)` writes (kombu 5.7).
    @Test(arguments: [
        (
            KombuValue.datetime("2026-01-02T03:04:05+00:00"),
            #"{"__type__":"datetime","__value__":"2026-01-02T03:04:05+00:00"}"#
        ),
        (
            .datetime("2026-11-22T02:54:10.882025+00:00"),
            #"{"__type__":"datetime","__value__":"2026-11-22T02:54:10.882025+00:00"}"#
        ),
        (.datetime("2030-01-01T12:00:00"), #"{"__type__":"datetime","__value__":"2030-01-01T12:00:00"}"#),
        (.date("2026-01-02"), #"{"__type__":"date","__value__":"2026-01-02"}"#),
        (.time("03:04:05.123456"), #"{"__type__":"time","__value__":"03:04:05.123456"}"#),
        (.time("03:04:05"), #"{"__type__":"time","__value__":"03:04:05"}"#),
        (.decimal("1.10"), #"{"__type__":"decimal","__value__":"1.10"}"#),
        (.decimal("-1E+2"), #"{"__type__":"decimal","__value__":"-1E+2"}"#),
        (
            .uuid("5d5c6c3c-4b1a-4c9e-9f0e-2b7c8a9d1e2f"),
            #"{"__type__":"uuid","__value__":{"hex":"5d5c6c3c4b1a4c9e9f0e2b7c8a9d1e2f"}}"#
        ),
        (.bytes(Array("hello".utf8)), #"{"__type__":"bytes","__value__":"hello"}"#),
        (.bytes([0x68, 0xC3, 0xA9, 0x00]), #"{"__type__":"bytes","__value__":"hé\u0000"}"#),
        (.bytes([]), #"{"__type__":"bytes","__value__":""}"#),
        (
            .bytes([0, 1, 2, 3, 4, 5, 6]),
            #"{"__type__":"bytes","__value__":"\u0000\u0001\u0002\u0003\u0004\u0005\u0006"}"#
        ),
        (.bytes([0xFF, 0x00, 0x61, 0x62]), #"{"__type__":"base64","__value__":"/wBhYg=="}"#),
        (.bytes([0xED, 0xA0, 0x80]), #"{"__type__":"base64","__value__":"7aCA"}"#),  // an encoded surrogate
        (.bytes([0x80]), #"{"__type__":"base64","__value__":"gA=="}"#),
        (.bytes([0xFE, 0xFF]), #"{"__type__":"base64","__value__":"/v8="}"#),
    ])
    func encodesAndDecodesLikeKombu(value: KombuValue, python: String) throws {
        let encoded = JSONValue(kombu: value)
        #expect(encoded.serializedString() == python)
        #expect(encoded.kombuValue == value)
        #expect(try JSONValue(parsing: python).kombuValue == value)
    }

    @Test func markersInsideADocument() throws {
        let python =
            #"{"args":[{"__type__":"datetime","__value__":"2026-01-02T03:04:05+00:00"}],"#
            + #""x":{"__type__":"decimal","__value__":"0.1"}}"#
        let value = try JSONValue(parsing: python)
        #expect(value["args"]?[0]?.kombuValue == .datetime("2026-01-02T03:04:05+00:00"))
        #expect(value["x"]?.kombuValue == .decimal("0.1"))
        let rebuilt: JSONValue = [
            "args": [JSONValue(kombu: .datetime("2026-01-02T03:04:05+00:00"))],
            "x": JSONValue(kombu: .decimal("0.1")),
        ]
        #expect(rebuilt.serializedString() == python)
    }

    /// Python's `UUID(hex=…)` accepts these spellings; decoding gives the canonical form.
    @Test(arguments: [
        "5D5C6C3C4B1A4C9E9F0E2B7C8A9D1E2F",
        "5d5c6c3c-4b1a-4c9e-9f0e-2b7c8a9d1e2f",
        "{5d5c6c3c-4b1a-4c9e-9f0e-2b7c8a9d1e2f}",
        "urn:uuid:5d5c6c3c-4b1a-4c9e-9f0e-2b7c8a9d1e2f",
    ])
    func uuidSpellings(hex: String) {
        let marker: JSONValue = ["__type__": "uuid", "__value__": ["hex": .string(hex)]]
        #expect(marker.kombuValue == .uuid("5d5c6c3c-4b1a-4c9e-9f0e-2b7c8a9d1e2f"))
        #expect(
            JSONValue(kombu: .uuid(hex))["__value__"]?["hex"] == "5d5c6c3c4b1a4c9e9f0e2b7c8a9d1e2f"
        )
    }

    /// Objects kombu's object_hook leaves alone or cannot decode: not markers.
    @Test(arguments: [
        #"{"__type__":"datetime"}"#,
        #"{"__type__":"datetime","__value__":"2026-01-02","extra":1}"#,
        #"{"__type__":"pickle","__value__":"x"}"#,
        #"{"__type__":"datetime","__value__":5}"#,
        #"{"__type__":5,"__value__":"x"}"#,
        #"{"__type__":"uuid","__value__":{"hex":"not-a-uuid"}}"#,
        #"{"__type__":"uuid","__value__":"5d5c6c3c4b1a4c9e9f0e2b7c8a9d1e2f"}"#,
        #"{"__type__":"base64","__value__":"gA"}"#,
        #"{"__type__":"base64","__value__":"g"}"#,
        #"["__type__","__value__"]"#,
        #""datetime""#,
    ])
    func nonMarkers(text: String) throws {
        #expect(try JSONValue(parsing: text).kombuValue == nil)
    }

    @Test func markerKeyOrderDoesNotMatter() throws {
        let value = try JSONValue(parsing: #"{"__value__":"2026-01-02","__type__":"date"}"#)
        #expect(value.kombuValue == .date("2026-01-02"))
    }

    @Test func base64RoundTripsEveryLengthAndByte() throws {
        for length in 0..<300 {
            // Starting with 0xFF keeps the bytes invalid UTF-8, so they go through base64.
            let bytes = [0xFF] + (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let encoded = JSONValue(kombu: .bytes(bytes))
            #expect(encoded["__type__"] == "base64")
            #expect(encoded.kombuValue == .bytes(bytes))
        }
    }

    @Test func base64SkipsCharactersOutsideTheAlphabetLikePython() throws {
        // base64.b64decode("/wBh\nYg==") == b"\xff\x00ab"
        let value: JSONValue = ["__type__": "base64", "__value__": "/wBh\nYg=="]
        #expect(value.kombuValue == .bytes([0xFF, 0x00, 0x61, 0x62]))
    }
}
