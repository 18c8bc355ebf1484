/// A Python value that kombu's JSON serializer wraps in a `{"__type__": …, "__value__": …}` marker.
///
/// The payloads are kept as Python writes them (`isoformat()` text, `str(Decimal)`), so nothing is lost in a
/// round trip; `CeleryTimestamp(iso8601:)` reads a `datetime`.
public enum KombuValue: Sendable, Hashable {
    /// A `datetime`, as `datetime.isoformat()` text, e.g. `2026-01-02T03:04:05+00:00`.
    case datetime(String)
    /// A `date`, as `date.isoformat()` text, e.g. `2026-01-02`.
    case date(String)
    /// A `time`, as `time.isoformat()` text, e.g. `03:04:05.123456`.
    case time(String)
    /// A `Decimal`, as `str(Decimal)` text, e.g. `1.10`.
    case decimal(String)
    /// A `UUID`, as its canonical lowercase hyphenated text, e.g. `5d5c6c3c-4b1a-4c9e-9f0e-2b7c8a9d1e2f`.
    case uuid(String)
    /// A `bytes` object (kombu writes UTF-8 bytes as text under `bytes`, others as base64 under `base64`).
    case bytes([UInt8])
}

extension JSONValue {
    /// The Python value a kombu marker object stands for; nil if this is not a marker kombu 5.7 would decode.
    public var kombuValue: KombuValue? {
        // kombu's object_hook only fires when the keys are exactly these two.
        guard case .object(let object) = self, object.count == 2,
            case .string(let type) = object["__type__"], let value = object["__value__"]
        else {
            return nil
        }
        switch (type, value) {
        case ("datetime", .string(let text)): return .datetime(text)
        case ("date", .string(let text)): return .date(text)
        case ("time", .string(let text)): return .time(text)
        case ("decimal", .string(let text)): return .decimal(text)
        case ("uuid", .object(let fields)):
            guard case .string(let hex) = fields["hex"], let canonical = KombuValue.canonicalUUID(hex) else {
                return nil
            }
            return .uuid(canonical)
        case ("bytes", .string(let text)): return .bytes(Array(text.utf8))
        case ("base64", .string(let text)):
            guard let bytes = KombuValue.base64Decoded(text) else { return nil }
            return .bytes(bytes)
        default: return nil
        }
    }

    /// The marker object kombu 5.7 writes for this value.
    ///
    /// A `.uuid` is written as kombu's `{"hex": …}` (32 lowercase hex digits); hyphens, braces and a `urn:uuid:`
    /// prefix are dropped as Python's `UUID()` does.
    public init(kombu value: KombuValue) {
        let type: String
        let payload: JSONValue
        switch value {
        case .datetime(let text): (type, payload) = ("datetime", .string(text))
        case .date(let text): (type, payload) = ("date", .string(text))
        case .time(let text): (type, payload) = ("time", .string(text))
        case .decimal(let text): (type, payload) = ("decimal", .string(text))
        case .uuid(let text): (type, payload) = ("uuid", ["hex": .string(KombuValue.uuidHex(text))])
        case .bytes(let bytes):
            if let text = String(validating: bytes, as: UTF8.self) {
                (type, payload) = ("bytes", .string(text))
            } else {
                (type, payload) = ("base64", .string(KombuValue.base64Encoded(bytes)))
            }
        }
        self = .object(["__type__": .string(type), "__value__": payload])
    }
}

extension KombuValue {
    /// Python's `UUID(hex=…)` normalisation: drop `urn:`, `uuid:`, braces and hyphens, lowercase.
    static func uuidHex(_ text: String) -> String {
        var text = Substring(text)
        if text.hasPrefix("urn:") { text = text.dropFirst(4) }
        if text.hasPrefix("uuid:") { text = text.dropFirst(5) }
        return String(text.filter { $0 != "{" && $0 != "}" && $0 != "-" }.lowercased())
    }

    static func canonicalUUID(_ text: String) -> String? {
        let hex = Array(Self.uuidHex(text).utf8)
        guard hex.count == 32, hex.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            return nil
        }
        var canonical: [UInt8] = []
        canonical.reserveCapacity(36)
        for (index, digit) in hex.enumerated() {
            if index == 8 || index == 12 || index == 16 || index == 20 { canonical.append(UInt8(ascii: "-")) }
            canonical.append(digit)
        }
        return String(decoding: canonical, as: UTF8.self)
    }

    private static let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func base64Encoded(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let remaining = bytes.count - index
            let b0 = UInt32(bytes[index])
            let b1 = remaining > 1 ? UInt32(bytes[index + 1]) : 0
            let b2 = remaining > 2 ? UInt32(bytes[index + 2]) : 0
            let group = b0 << 16 | b1 << 8 | b2
            output.append(Self.base64Alphabet[Int(group >> 18 & 0x3F)])
            output.append(Self.base64Alphabet[Int(group >> 12 & 0x3F)])
            output.append(remaining > 1 ? Self.base64Alphabet[Int(group >> 6 & 0x3F)] : UInt8(ascii: "="))
            output.append(remaining > 2 ? Self.base64Alphabet[Int(group & 0x3F)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Decodes like Python's `base64.b64decode` (non-validating): other characters are skipped, padding is checked.
    static func base64Decoded(_ text: String) -> [UInt8]? {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count / 4 * 3)
        var group: UInt32 = 0
        var digits = 0
        var padding = 0
        for byte in text.utf8 {
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): digit = UInt32(byte - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): digit = UInt32(byte - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): digit = 62
            case UInt8(ascii: "/"): digit = 63
            case UInt8(ascii: "="):
                padding += 1
                continue
            default: continue
            }
            guard padding == 0 else { return nil }  // data after padding
            group = group << 6 | digit
            digits += 1
            if digits == 4 {
                output.append(UInt8(truncatingIfNeeded: group >> 16))
                output.append(UInt8(truncatingIfNeeded: group >> 8))
                output.append(UInt8(truncatingIfNeeded: group))
                group = 0
                digits = 0
            }
        }
        switch digits {
        case 0:
            break
        case 2 where padding >= 2:
            output.append(UInt8(truncatingIfNeeded: group >> 4))
        case 3 where padding >= 1:
            output.append(UInt8(truncatingIfNeeded: group >> 10))
            output.append(UInt8(truncatingIfNeeded: group >> 2))
        default:
            return nil  // incorrect padding
        }
        return output
    }
}
