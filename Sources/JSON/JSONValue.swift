/// A JSON value. Integers stay exact 64-bit; object key order is preserved (insertion order).
public enum JSONValue: Sendable, Hashable {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// An integer number, exact in 64 bits.
    case int(Int)
    /// A number with a fraction or an exponent.
    case double(Double)
    /// A string (may contain U+0000).
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object, members in insertion order.
    case object(JSONObject)
}

extension JSONValue {
    /// The deepest nesting of arrays and objects that parsing accepts and `serialize()` writes (jansson's limit).
    public static let maximumDepth = 2048
}

extension JSONValue: CustomStringConvertible {
    /// The compact JSON text of this value.
    public var description: String { self.serializedString() }
}
