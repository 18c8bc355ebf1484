import JSON

/// Celery's canvas signatures as the dicts Celery serializes (`chain(...)`, `group(...)`, `chord(...)`), to nest
/// and to hand to `TaskReplace`. Members are signature dicts: `Signature.json` or another canvas.
///
/// ```swift
/// Canvas.chain([add.json, Canvas.group([Signature("tasks.add", args: [1]).json, ...])])
/// ```
public enum Canvas {
    /// `chain(*steps)`; `options` are the chain's own (`link`, `link_error`).
    public static func chain(_ steps: [JSONValue], options: JSONObject = [:]) -> JSONValue {
        canvas("celery.chain", kind: "chain", kwargs: ["tasks": .array(steps)], options: options)
    }

    /// `group(*members)`.
    public static func group(_ members: [JSONValue], options: JSONObject = [:]) -> JSONValue {
        canvas("celery.group", kind: "group", kwargs: ["tasks": .array(members)], options: options)
    }

    /// `chord(header, body)`: `body` gets the list of the header's results.
    public static func chord(_ header: [JSONValue], body: JSONValue, options: JSONObject = [:]) -> JSONValue {
        canvas(
            "celery.chord",
            kind: "chord",
            kwargs: ["header": group(header), "body": body, "kwargs": [:]],
            options: options
        )
    }

    /// The signature with `options` set on it, as Celery's `sig.set(**options)`.
    public static func setting(_ options: JSONObject, on signature: JSONValue) -> JSONValue {
        options.reduce(signature) { Signature.setting($1.key, to: $1.value, in: $0) }
    }

    private static func canvas(_ name: String, kind: String, kwargs: JSONObject, options: JSONObject) -> JSONValue {
        [
            "task": .string(name), "args": [], "kwargs": .object(kwargs), "options": .object(options),
            "subtask_type": .string(kind), "immutable": false,
        ]
    }
}

extension Signature {
    /// `sig.link(callback)` / `sig.link_error(errback)` over a signature dict: appends to its `options.link` or
    /// `options.link_error`, which may hold one signature or a list.
    package static func appending(_ added: [JSONValue], to key: String, of signature: JSONValue) -> JSONValue {
        guard !added.isEmpty, case .object(var object) = signature else { return signature }
        var options = object["options"]?.objectValue ?? [:]
        var list: [JSONValue]
        switch options[key] {
        case .array(let items)?: list = items
        case .object(let one)?: list = [.object(one)]
        default: list = []
        }
        list += added
        options[key] = .array(list)
        object["options"] = .object(options)
        return .object(object)
    }

    /// The signature dict with `kwargs[key] = value` (a canvas's `tasks`, `header`, `body`).
    package static func settingKwarg(_ key: String, to value: JSONValue, in signature: JSONValue) -> JSONValue {
        guard case .object(var object) = signature else { return signature }
        var kwargs = object["kwargs"]?.objectValue ?? [:]
        kwargs[key] = value
        object["kwargs"] = .object(kwargs)
        return .object(object)
    }

    /// The signature dict with `options[key] = value`.
    package static func setting(_ key: String, to value: JSONValue, in signature: JSONValue) -> JSONValue {
        guard case .object(var object) = signature else { return signature }
        var options = object["options"]?.objectValue ?? [:]
        options[key] = value
        object["options"] = .object(options)
        return .object(object)
    }
}
