import FoundationEssentials
import JSON

/// A `Codable` type as a task's parameter or result: the JSON object Python sends decodes into it and it encodes
/// back into one, as Celery 5.5 does with pydantic models (`@app.task(pydantic=True)`).
///
/// ```swift
/// struct AddParameters: CodableTaskValue { var x: Int; var y: Int }
/// struct AddResult: CodableTaskValue { var result: Int }
/// registry.register("proj.add", parameters: ["data"]) { (_, data: AddParameters) in
///     AddResult(result: data.x + data.y)
/// }
/// ```
/// JSON that does not fit fails the task with a `ValidationError` worded as pydantic words it.
public protocol CodableTaskValue: Codable, TaskArgument, TaskResult {}

extension CodableTaskValue {
    public init?(taskArgument json: JSONValue) {
        guard let value = try? JSONDecoder().decode(Self.self, from: Data(json.serialized())) else { return nil }
        self = value
    }

    /// The Swift type's name, as pydantic names the model.
    public static var pythonTypeName: String { String(describing: Self.self) }

    /// pydantic's `ValidationError` for JSON that does not decode.
    public static func validationError(for json: JSONValue) -> PythonException? {
        do {
            _ = try JSONDecoder().decode(Self.self, from: Data(json.serialized()))
            return nil
        } catch let error as DecodingError {
            return PythonException(
                type: "ValidationError",
                module: "pydantic_core._pydantic_core",
                "1 validation error for \(pythonTypeName)\n" + Self.describe(error, input: json)
            )
        } catch {
            return PythonException(type: "ValidationError", module: "pydantic_core._pydantic_core", "\(error)")
        }
    }

    /// The value as a JSON object (non-finite floats as Python's `Infinity` / `NaN` strings).
    public var taskResultJSON: JSONValue {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "Infinity",
            negativeInfinity: "-Infinity",
            nan: "NaN"
        )
        guard let data = try? encoder.encode(self), let json = try? JSONValue(parsing: Array(data)) else {
            return .null
        }
        return json
    }

    /// The field path and pydantic's message for one decoding error.
    static func describe(_ error: DecodingError, input: JSONValue) -> String {
        func location(_ path: [any CodingKey]) -> String {
            let parts = path.map { $0.intValue.map(String.init) ?? $0.stringValue }
            return parts.isEmpty ? "" : parts.joined(separator: ".") + "\n"
        }
        let kind = Celery.pythonTypeName(of: input)
        switch error {
        case .keyNotFound(let key, let context):
            return location(context.codingPath + [key]) + "  Field required [type=missing, input_type=\(kind)]"
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            return location(context.codingPath)
                + "  Input should be a valid \(Self.pythonName(of: type)) [type=\(Self.pythonName(of: type))_type]"
        case .dataCorrupted(let context):
            return location(context.codingPath) + "  \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }

    static func pythonName(of type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type, is Int32.Type: "integer"
        case is Double.Type, is Float.Type: "number"
        case is String.Type: "string"
        case is Bool.Type: "boolean"
        case is [Any].Type: "list"
        default: "dictionary"
        }
    }
}
