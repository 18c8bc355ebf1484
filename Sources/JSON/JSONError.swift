import CJansson

/// A JSON text that could not be parsed, or a value that could not be serialized.
public struct JSONError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, in jansson's words, e.g. `'[' or '{' expected near 'x'`.
    public var message: String
    /// The 1-based line of the error, 0 if unknown.
    public var line: Int
    /// The 1-based column (in characters) of the error, 0 if unknown.
    public var column: Int
    /// The byte offset in the input where the error was detected.
    public var position: Int

    /// Creates an error from its parts.
    public init(message: String, line: Int = 0, column: Int = 0, position: Int = 0) {
        self.message = message
        self.line = line
        self.column = column
        self.position = position
    }

    /// A one-line account: `invalid JSON at line 1, column 5 (byte 4): …`, or `JSON error: …` without a line.
    public var description: String {
        guard self.line > 0 else { return "JSON error: \(self.message)" }
        return "invalid JSON at line \(self.line), column \(self.column) (byte \(self.position)): \(self.message)"
    }
}

extension JSONError {
    init(jansson error: json_error_t) {
        var message = withUnsafeBytes(of: error.text) { text in
            String(decoding: text.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        var error = error
        if json_error_code(&error) == json_error_numeric_overflow {
            message += " (JSON numbers must fit a 64-bit signed integer or a finite double)"
        }
        self.init(
            message: message,
            line: Int(error.line),
            column: Int(error.column),
            position: Int(error.position)
        )
    }
}
