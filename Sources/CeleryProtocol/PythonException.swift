import JSON

/// An error a handler throws to make Python's `.get()` raise a particular exception class.
///
/// The client rebuilds `module.Type(*arguments)` when that module is imported on its side (builtins always are),
/// and otherwise a same-named class in `celery.exceptions`.
public protocol PythonMappedError: Error {
    /// The exception's class name, e.g. `ValueError`.
    var pythonExceptionType: String { get }
    /// The module the class lives in, e.g. `builtins`.
    var pythonExceptionModule: String { get }
    /// The exception's `args`.
    var pythonExceptionArguments: [JSONValue] { get }
}

/// A Python exception by name: `throw PythonException.valueError("bad input")`.
public struct PythonException: PythonMappedError, Sendable, CustomStringConvertible {
    public var pythonExceptionType: String
    public var pythonExceptionModule: String
    public var pythonExceptionArguments: [JSONValue]

    /// Any class in any module, with its constructor arguments.
    public init(type: String, module: String = "builtins", arguments: [JSONValue]) {
        self.pythonExceptionType = type
        self.pythonExceptionModule = module
        self.pythonExceptionArguments = arguments
    }

    /// A class with a single message argument.
    public init(type: String, module: String = "builtins", _ message: String) {
        self.init(type: type, module: module, arguments: [.string(message)])
    }

    /// `builtins.ValueError(message)`.
    public static func valueError(_ message: String) -> PythonException { .init(type: "ValueError", message) }
    /// `builtins.TypeError(message)`.
    public static func typeError(_ message: String) -> PythonException { .init(type: "TypeError", message) }
    /// `builtins.KeyError(message)`.
    public static func keyError(_ message: String) -> PythonException { .init(type: "KeyError", message) }
    /// `builtins.RuntimeError(message)`.
    public static func runtimeError(_ message: String) -> PythonException { .init(type: "RuntimeError", message) }

    public var description: String {
        let args = pythonExceptionArguments.map { $0.stringValue.map { "'\($0)'" } ?? $0.serializedString() }
        return "\(pythonExceptionType)(\(args.joined(separator: ", ")))"
    }
}

/// How any thrown error is stored: `exc_type`, `exc_module`, `exc_message` (a list), and a traceback text.
package struct StoredException: Sendable {
    package var type: String
    package var module: String
    package var arguments: [JSONValue]

    /// The stored form of the exception this one was raised from (Python's `__cause__`): a chord's error keeps the
    /// error of the header task that failed it.
    package var cause: JSONValue?

    package init(type: String, module: String, arguments: [JSONValue], cause: JSONValue? = nil) {
        self.type = type
        self.module = module
        self.arguments = arguments
        self.cause = cause
    }

    /// The exception a stored `{exc_type, exc_message, exc_module}` describes; nil when `stored` is not one.
    package init?(stored: JSONValue) {
        guard let type = stored["exc_type"]?.stringValue else { return nil }
        self.init(
            type: type,
            module: stored["exc_module"]?.stringValue ?? "builtins",
            arguments: Self.arguments(ofStored: stored)
        )
    }

    /// The arguments of a stored exception: its `exc_message`, a list, or one value, or none.
    package static func arguments(ofStored stored: JSONValue) -> [JSONValue] {
        switch stored["exc_message"] {
        case .array(let items)?: items
        case nil, .null?: []
        case let single?: [single]
        }
    }

    /// The exception this one was raised from, or this one: what Celery's `_handle_group_chord_error` fails the
    /// tasks of a group body with.
    package var original: StoredException {
        cause.flatMap { StoredException(stored: $0) } ?? self
    }

    package init(_ error: any Error) {
        if let mapped = error as? any PythonMappedError {
            self.init(
                type: mapped.pythonExceptionType,
                module: mapped.pythonExceptionModule,
                arguments: mapped.pythonExceptionArguments
            )
        } else {
            // A Swift error with no Python name: its Swift type name, in a module the client does not have, so
            // Python rebuilds a same-named class in celery.exceptions.
            let name = String(describing: Swift.type(of: error)).split(separator: ".").last.map(String.init) ?? "Error"
            self.init(type: name, module: "swift", arguments: [.string(String(describing: error))])
        }
    }

    package var resultJSON: JSONValue {
        .object([
            "exc_type": .string(type),
            "exc_message": .array(arguments),
            "exc_module": .string(module),
        ])
    }

    /// The `repr` Python would print, for tracebacks and events.
    package var repr: String {
        let args = arguments.map { $0.stringValue.map { "'\($0)'" } ?? $0.serializedString() }
        return "\(type)(\(args.joined(separator: ", ")))"
    }

    package func traceback(taskName: String, hostname: String) -> String {
        let qualified = module == "builtins" ? type : "\(module).\(type)"
        let message = arguments.count == 1 ? (arguments[0].stringValue ?? arguments[0].serializedString()) : repr
        return
            "Traceback (most recent call last):\n  Swift handler \"\(taskName)\" on \(hostname)\n\(qualified): \(message)\n"
    }
}
