import JSON

/// A Swift type a task argument can be decoded into. Failures become Python `TypeError`s naming the argument.
public protocol TaskArgument: Sendable {
    /// Decodes from the JSON the client sent; `nil` when the JSON has the wrong type.
    init?(taskArgument json: JSONValue)
    /// The Python type name used in error messages ("int", "str", ...).
    static var pythonTypeName: String { get }
    /// The error for JSON that does not decode, when the type words it better than "must be int, not str"
    /// (nil: that TypeError).
    static func validationError(for json: JSONValue) -> PythonException?
}

extension TaskArgument {
    /// The argument binder's TypeError.
    public static func validationError(for json: JSONValue) -> PythonException? { nil }
}

extension Int: TaskArgument {
    public init?(taskArgument json: JSONValue) {
        guard case .int(let value) = json else { return nil }
        self = value
    }
    public static var pythonTypeName: String { "int" }
}

extension Double: TaskArgument {
    public init?(taskArgument json: JSONValue) {
        switch json {
        case .double(let value): self = value
        case .int(let value): self = Double(value)
        default: return nil
        }
    }
    public static var pythonTypeName: String { "float" }
}

extension String: TaskArgument {
    public init?(taskArgument json: JSONValue) {
        guard case .string(let value) = json else { return nil }
        self = value
    }
    public static var pythonTypeName: String { "str" }
}

extension Bool: TaskArgument {
    public init?(taskArgument json: JSONValue) {
        guard case .bool(let value) = json else { return nil }
        self = value
    }
    public static var pythonTypeName: String { "bool" }
}

extension JSONValue: TaskArgument {
    public init?(taskArgument json: JSONValue) { self = json }
    public static var pythonTypeName: String { "object" }
}

extension Array: TaskArgument where Element: TaskArgument {
    public init?(taskArgument json: JSONValue) {
        guard case .array(let items) = json else { return nil }
        var result: [Element] = []
        result.reserveCapacity(items.count)
        for item in items {
            guard let element = Element(taskArgument: item) else { return nil }
            result.append(element)
        }
        self = result
    }
    public static var pythonTypeName: String { "list[\(Element.pythonTypeName)]" }
}

extension Dictionary: TaskArgument where Key == String, Value: TaskArgument {
    public init?(taskArgument json: JSONValue) {
        guard case .object(let members) = json else { return nil }
        var result: [String: Value] = [:]
        for (key, item) in members {
            guard let value = Value(taskArgument: item) else { return nil }
            result[key] = value
        }
        self = result
    }
    public static var pythonTypeName: String { "dict[str, \(Value.pythonTypeName)]" }
}

extension Optional: TaskArgument where Wrapped: TaskArgument {
    public init?(taskArgument json: JSONValue) {
        if case .null = json {
            self = .none
        } else if let value = Wrapped(taskArgument: json) {
            self = .some(value)
        } else {
            return nil
        }
    }
    public static var pythonTypeName: String { "\(Wrapped.pythonTypeName) | None" }
    public static func validationError(for json: JSONValue) -> PythonException? {
        Wrapped.validationError(for: json)
    }
}

/// The Python type name of a JSON value, for "must be int, not str" messages.
public func pythonTypeName(of json: JSONValue) -> String {
    switch json {
    case .null: "NoneType"
    case .bool: "bool"
    case .int: "int"
    case .double: "float"
    case .string: "str"
    case .array: "list"
    case .object: "dict"
    }
}

/// A value a handler can return: anything with a JSON form.
public protocol TaskResult: Sendable {
    /// The JSON stored as the task's result.
    var taskResultJSON: JSONValue { get }
    /// The Python type of the result in generated stubs (`swift-celery stubs`); `Any` unless a type names one.
    static var pythonResultTypeName: String { get }
}

extension TaskResult {
    /// `Any`: the stub says nothing of the result's type.
    public static var pythonResultTypeName: String { "Any" }
}

extension Int { public static var pythonResultTypeName: String { "int" } }
extension Double { public static var pythonResultTypeName: String { "float" } }
extension String { public static var pythonResultTypeName: String { "str" } }
extension Bool { public static var pythonResultTypeName: String { "bool" } }
extension Array where Element: TaskResult {
    public static var pythonResultTypeName: String { "list[\(Element.pythonResultTypeName)]" }
}
extension Dictionary where Key == String, Value: TaskResult {
    public static var pythonResultTypeName: String { "dict[str, \(Value.pythonResultTypeName)]" }
}
extension Optional where Wrapped: TaskResult {
    public static var pythonResultTypeName: String {
        Wrapped.pythonResultTypeName == "Any" ? "Any" : "\(Wrapped.pythonResultTypeName) | None"
    }
}

extension Int: TaskResult { public var taskResultJSON: JSONValue { .int(self) } }
extension Double: TaskResult { public var taskResultJSON: JSONValue { .double(self) } }
extension String: TaskResult { public var taskResultJSON: JSONValue { .string(self) } }
extension Bool: TaskResult { public var taskResultJSON: JSONValue { .bool(self) } }
extension JSONValue: TaskResult { public var taskResultJSON: JSONValue { self } }
extension Array: TaskResult where Element: TaskResult {
    public var taskResultJSON: JSONValue { .array(map(\.taskResultJSON)) }
}
extension Dictionary: TaskResult where Key == String, Value: TaskResult {
    public var taskResultJSON: JSONValue {
        .object(JSONObject(uniqueKeysWithValues: sorted { $0.key < $1.key }.map { ($0.key, $0.value.taskResultJSON) }))
    }
}
extension Optional: TaskResult where Wrapped: TaskResult {
    public var taskResultJSON: JSONValue { self?.taskResultJSON ?? .null }
}

/// A handler that returns nothing stores `None`.
public struct NoResult: TaskResult {
    public init() {}
    public static var pythonResultTypeName: String { "None" }
    public var taskResultJSON: JSONValue { .null }
}
