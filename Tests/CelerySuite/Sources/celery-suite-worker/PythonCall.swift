import Celery
import JSON

/// A Python function's parameters bound from a call's `*args, **kwargs`, for the ported tasks whose signatures
/// have defaults, `*args` or `**kwargs` (Python's TypeError wording when the call does not fit).
struct PythonCall {
    /// The values bound to the named parameters (absent: not given and no default).
    private var values: [String: JSONValue] = [:]
    /// Positional arguments past the named ones (`*args`).
    var rest: [JSONValue] = []
    /// Keyword arguments no parameter takes (`**kwargs`).
    var extra: JSONObject = [:]

    /// Binds `arguments` to `parameters` (name and default, nil: required), then `*args` when `variadic`, then the
    /// keyword-only `keywordOnly`, then `**kwargs` when `keywords`.
    init(
        _ function: String,
        _ arguments: TaskArguments,
        _ positional: [(String, JSONValue?)],
        variadic: Bool = false,
        keywordOnly: [(String, JSONValue?)] = [],
        keywords: Bool = false
    ) throws {
        let parameters = positional + keywordOnly
        var args = arguments.args
        if args.count > positional.count, variadic {
            rest = Array(args[positional.count...])
            args = Array(args[..<positional.count])
        }
        for (index, (name, _)) in positional.enumerated() where index < args.count {
            values[name] = args[index]
        }
        if args.count > positional.count {
            throw PythonException.typeError(
                "\(function)() takes \(positional.count) positional arguments but \(args.count) were given"
            )
        }
        for (key, value) in arguments.kwargs {
            guard parameters.contains(where: { $0.0 == key }) else {
                guard keywords else {
                    throw PythonException.typeError("\(function)() got an unexpected keyword argument '\(key)'")
                }
                extra[key] = value
                continue
            }
            guard values[key] == nil else {
                throw PythonException.typeError("\(function)() got multiple values for argument '\(key)'")
            }
            values[key] = value
        }
        for (name, fallback) in parameters where values[name] == nil {
            guard let fallback else {
                throw PythonException.typeError("\(function)() missing 1 required positional argument: '\(name)'")
            }
            values[name] = fallback
        }
    }

    subscript(name: String) -> JSONValue { values[name] ?? .null }
}

/// Python's operators and builtins on JSON values, as the ported tasks use them.
enum Python {
    /// `x + y`: ints exact, floats mixed in, strings and lists concatenated; else Python's TypeError.
    static func add(_ x: JSONValue, _ y: JSONValue) throws -> JSONValue {
        switch (x, y) {
        case (.int(let a), .int(let b)):
            let (sum, overflow) = a.addingReportingOverflow(b)
            guard !overflow else { throw PythonException(type: "OverflowError", "int too large") }
            return .int(sum)
        case (.string(let a), .string(let b)): return .string(a + b)
        case (.array(let a), .array(let b)): return .array(a + b)
        case (.bool, _), (_, .bool):
            return try add(asNumber(x), asNumber(y))
        default:
            if let a = x.doubleValue, let b = y.doubleValue, isNumber(x), isNumber(y) { return .double(a + b) }
            throw PythonException.typeError(
                "unsupported operand type(s) for +: '\(pythonTypeName(of: x))' and '\(pythonTypeName(of: y))'"
            )
        }
    }

    /// `x * y` on numbers.
    static func multiply(_ x: JSONValue, _ y: JSONValue) throws -> JSONValue {
        switch (x, y) {
        case (.int(let a), .int(let b)):
            let (product, overflow) = a.multipliedReportingOverflow(by: b)
            guard !overflow else { throw PythonException(type: "OverflowError", "int too large") }
            return .int(product)
        default:
            if let a = x.doubleValue, let b = y.doubleValue, isNumber(x), isNumber(y) { return .double(a * b) }
            throw PythonException.typeError(
                "unsupported operand type(s) for *: '\(pythonTypeName(of: x))' and '\(pythonTypeName(of: y))'"
            )
        }
    }

    /// `sum(values)`.
    static func sum(_ values: JSONValue) throws -> JSONValue {
        guard case .array(let items) = values else {
            throw PythonException.typeError("'\(pythonTypeName(of: values))' object is not iterable")
        }
        return try items.reduce(JSONValue.int(0)) { try add($0, $1) }
    }

    /// Python's truth value.
    static func truthy(_ value: JSONValue) -> Bool {
        switch value {
        case .null: false
        case .bool(let b): b
        case .int(let i): i != 0
        case .double(let d): d != 0
        case .string(let s): !s.isEmpty
        case .array(let a): !a.isEmpty
        case .object(let o): !o.isEmpty
        }
    }

    private static func isNumber(_ value: JSONValue) -> Bool {
        switch value {
        case .int, .double: true
        default: false
        }
    }

    private static func asNumber(_ value: JSONValue) -> JSONValue {
        if case .bool(let b) = value { return .int(b ? 1 : 0) }
        return value
    }
}
