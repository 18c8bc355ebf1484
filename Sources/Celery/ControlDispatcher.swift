import CeleryProtocol
import CeleryRedis
import JSON

/// What the control commands act on: the worker, or an in-memory stand-in in unit tests.
package protocol ControlTarget: Sendable {
    var hostname: String { get }
    var hooks: ControlHooks { get }
    /// `registered`: the registered task names (Celery's built-ins included), sorted.
    func taskNames() -> [String]
    /// `registered` with `taskinfoitems`: `str()` of a Celery `Task` attribute of the task (`rate_limit`,
    /// `ignore_result`, ...), nil where Python's is None or the task has no such attribute.
    func taskAttribute(_ field: String, of taskName: String) -> String?
    /// `report`: Celery's bug-report text (software, platform, settings).
    func report() -> String
    /// `revoke_by_stamped_headers`: revokes these stamps (header: stamp or list of stamps); with `terminate`, also
    /// cancels the running tasks that carry one, and returns the stamps matched, by header.
    func revokeStamps(_ headers: JSONObject, terminate: Bool) -> [(header: String, stamps: [JSONValue])]
    /// `active`, `reserved`, `scheduled`: Celery's request info dicts (`scheduled` wrapped with eta and priority).
    func activeRequests() -> [JSONValue]
    func reservedRequests() -> [JSONValue]
    func scheduledRequests() async -> [JSONValue]
    /// `query_task`: for each known id, `[state, info]` with state `active`, `reserved` or `scheduled`.
    func queryTasks(_ ids: [String]) async -> JSONObject
    func stats() -> JSONValue
    func configuration() -> JSONValue
    func activeQueues() -> [JSONValue]
    func revokedIDs() -> [String]
    /// Adds ids to the shared revoked set and stores REVOKED where Celery 5.7 would.
    func revoke(_ ids: [String]) async
    /// Cancels the running handlers of these ids; returns the ids that were running.
    func terminate(_ ids: [String]) -> [String]
    /// Sets a task's per-worker rate limit; false if no such task is registered.
    func setRateLimit(_ limit: TaskRateLimit, for taskName: String) -> Bool
    /// Sets a task's time limits (nil: none); false if no such task is registered.
    func setTimeLimits(soft: Double?, hard: Double?, for taskName: String) -> Bool
    /// Starts consuming a queue (declaring it).
    func addConsumer(_ queue: String) async
    func cancelConsumer(_ queue: String) async
    /// Merges ids another worker passed in `hello`.
    func mergeRevoked(_ ids: [String])
    /// The Lamport clock, advanced.
    func forwardClock() -> Int
    func currentClock() -> Int
    /// Starts a warm shutdown.
    func shutdown()
}

/// Runs one control request as Celery 5.7's worker does: the same commands, arguments, replies and errors
/// (captured from a Python worker; docs/protocol.md §5).
package struct ControlDispatcher: Sendable {
    /// A command's outcome: a reply body (sent only when the request has `reply_to`), or none at all (`shutdown`).
    package enum Outcome: Sendable, Equatable {
        case reply(JSONValue)
        case noReply
    }

    package let target: any ControlTarget

    package func dispatch(_ request: ControlRequest) async -> Outcome {
        let arguments = request.arguments
        switch request.method {
        case "ping":
            return .reply(ok("pong"))
        case "active", "dump_active":
            return .reply(.array(target.activeRequests()))
        case "reserved", "dump_reserved":
            return .reply(.array(target.reservedRequests()))
        case "scheduled", "dump_schedule":
            return .reply(.array(await target.scheduledRequests()))
        case "registered", "dump_tasks":
            return .reply(.array(registered(arguments).map { .string($0) }))
        case "stats":
            return .reply(target.stats())
        case "revoked", "dump_revoked":
            return .reply(.array(target.revokedIDs().map { .string($0) }))
        case "query_task":
            return .reply(.object(await target.queryTasks(Self.ids(arguments["ids"]))))
        case "conf", "dump_conf":
            return .reply(target.configuration())
        case "clock":
            return .reply(["clock": .int(target.currentClock())])
        case "report":
            return .reply(ok(target.report()))
        case "active_queues":
            return .reply(.array(target.activeQueues()))
        case "revoke":
            guard let value = arguments["task_id"] else {
                return .reply(Self.missing("revoke", ["task_id"]))
            }
            return .reply(await revoke(Self.ids(value), terminate: arguments["terminate"]?.isTruthy ?? false))
        case "revoke_by_stamped_headers":
            guard let headers = arguments["headers"] else {
                return .reply(Self.missing("revoke_by_stamped_headers", ["headers"]))
            }
            return .reply(revokeStamps(headers, terminate: arguments["terminate"]?.isTruthy ?? false))
        case "terminate":
            guard let value = arguments["task_id"] else {
                return .reply(Self.missing("terminate", ["task_id"]))
            }
            return .reply(await revoke(Self.ids(value), terminate: true))
        case "shutdown":
            target.shutdown()
            return .noReply
        case "rate_limit":
            return .reply(rateLimit(arguments))
        case "time_limit":
            guard let name = arguments["task_name"]?.stringValue else { return .reply(nok("unknown task")) }
            let soft = arguments["soft"]?.doubleValue
            let hard = arguments["hard"]?.doubleValue
            guard target.setTimeLimits(soft: soft, hard: hard, for: name) else { return .reply(nok("unknown task")) }
            return .reply(ok("time limits set successfully"))
        case "heartbeat":
            guard let heartbeat = target.hooks.heartbeat else { return .reply(.null) }
            heartbeat()
            return .reply(.null)
        case "enable_events":
            guard let enable = target.hooks.enableEvents else { return .reply(nok("event dispatcher unavailable")) }
            return .reply(ok(enable() ? "task events enabled" : "task events already enabled"))
        case "disable_events":
            guard let disable = target.hooks.disableEvents else {
                return .reply(nok("event dispatcher unavailable"))
            }
            return .reply(ok(disable() ? "task events disabled" : "task events already disabled"))
        case "add_consumer":
            guard let queue = arguments["queue"]?.stringValue, !queue.isEmpty else {
                return .reply(Self.missing("add_consumer", ["queue"]))
            }
            await target.addConsumer(queue)
            return .reply(ok("add consumer \(queue)"))
        case "cancel_consumer":
            guard let queue = arguments["queue"]?.stringValue, !queue.isEmpty else {
                return .reply(Self.missing("cancel_consumer", ["queue"]))
            }
            await target.cancelConsumer(queue)
            return .reply(ok("no longer consuming from \(queue)"))
        case "hello":
            guard let from = arguments["from_node"]?.stringValue else {
                return .reply(Self.missing("hello", ["from_node"]))
            }
            // Python answers None to its own hello.
            guard from != target.hostname else { return .reply(.null) }
            target.mergeRevoked(Self.ids(arguments["revoked"]))
            return .reply([
                "revoked": .array(target.revokedIDs().map { .string($0) }),
                "clock": .int(target.forwardClock()),
            ])
        default:
            return .reply(nok("KeyError(\(PythonText.repr(request.method)))"))
        }
    }

    private func revoke(_ ids: [String], terminate: Bool) async -> JSONValue {
        await target.revoke(ids)
        if terminate {
            let terminated = target.terminate(ids)
            return ok(
                terminated.isEmpty ? "terminate: tasks unknown" : "terminate: \(terminated.joined(separator: ", "))"
            )
        }
        let set = ids.map(PythonText.repr).joined(separator: ", ")
        return ok("tasks {\(set)} flagged as revoked")
    }

    /// Celery's `registered`: names without the `celery.` built-ins unless `builtins`, each followed by
    /// ` [field=value ...]` for the `taskinfoitems` (default `exchange`, `routing_key`, `rate_limit`) it has.
    private func registered(_ arguments: JSONObject) -> [String] {
        var items = (arguments["taskinfoitems"]?.arrayValue ?? []).compactMap(\.stringValue)
        if arguments["taskinfoitems"]?.isTruthy != true { items = Self.defaultTaskInfoItems }
        items = items.filter { !$0.hasPrefix("_") }
        let builtins = arguments["builtins"]?.isTruthy ?? false
        return target.taskNames().compactMap { name -> String? in
            guard builtins || !name.hasPrefix(TaskRegistry.builtinPrefix) else { return nil }
            var fields: [String] = []
            var seen: Set<String> = []
            for item in items where seen.insert(item).inserted {
                if let value = target.taskAttribute(item, of: name) { fields.append("\(item)=\(value)") }
            }
            return fields.isEmpty ? name : "\(name) [\(fields.joined(separator: " "))]"
        }
    }

    /// Celery's `DEFAULT_TASK_INFO_ITEMS`.
    package static let defaultTaskInfoItems = ["exchange", "routing_key", "rate_limit"]

    /// Celery's `revoke_by_stamped_headers`: `headers` is `{header: stamps}` or a list of `"header=stamp"`.
    private func revokeStamps(_ value: JSONValue, terminate: Bool) -> JSONValue {
        var headers: JSONObject = [:]
        switch value {
        case .object(let object):
            headers = object
        case .array(let items):
            for item in items {
                guard let text = item.stringValue else {
                    return nok("AttributeError(\"'\(pythonTypeName(of: item))' object has no attribute 'split'\")")
                }
                let parts = text.split(separator: "=", omittingEmptySubsequences: false)
                guard parts.count > 1 else { return nok("IndexError('list index out of range')") }
                headers[String(parts[0])] = .string(String(parts[1]))
            }
        default:
            return nok("AttributeError(\"'\(pythonTypeName(of: value))' object has no attribute 'items'\")")
        }
        let terminated = target.revokeStamps(headers, terminate: terminate)
        let shown = PythonText.repr(.object(headers))
        guard terminate else { return ok("headers \(shown) flagged as revoked, but not terminated") }
        guard !terminated.isEmpty else { return ok("headers \(shown) were not terminated") }
        let sets = terminated.map { entry in
            "\(PythonText.repr(entry.header)): {\(entry.stamps.map(PythonText.repr).joined(separator: ", "))}"
        }
        return ok("headers defaultdict(<class 'set'>, {\(sets.joined(separator: ", "))}) revoked")
    }

    private func rateLimit(_ arguments: JSONObject) -> JSONValue {
        guard let name = arguments["task_name"]?.stringValue else {
            return Self.missing("rate_limit", ["task_name", "rate_limit"])
        }
        let text: String
        switch arguments["rate_limit"] {
        case .string(let value)?: text = value
        case .int(let value)?: text = String(value)
        case .double(let value)?: text = String(value)
        case .null?: text = ""
        default: return Self.missing("rate_limit", ["rate_limit"])
        }
        let limit: TaskRateLimit
        do {
            limit = try TaskRateLimit(text)
        } catch {
            return error.isValueError ? nok("Invalid rate limit string: \(error.pythonRepr)") : nok(error.pythonRepr)
        }
        guard target.setRateLimit(limit, for: name) else { return nok("unknown task") }
        // Python tests the argument itself: None, "" and 0 disable; the string "0" is "set" (and limits nothing).
        let given = arguments["rate_limit"]?.isTruthy ?? false
        return ok(given ? "new rate limit set successfully" : "rate limit disabled successfully")
    }

    /// A task id or a list of them (`maybe_list`).
    package static func ids(_ value: JSONValue?) -> [String] {
        switch value {
        case .string(let id)?: return [id]
        case .array(let items)?: return items.compactMap(\.stringValue)
        default: return []
        }
    }

    /// Python's TypeError for a command called without a required argument.
    package static func missing(_ function: String, _ names: [String]) -> JSONValue {
        let quoted = names.map { "'\($0)'" }
        let list = quoted.count == 1 ? quoted[0] : quoted.dropLast().joined(separator: ", ") + " and " + quoted.last!
        let plural = names.count == 1 ? "argument" : "arguments"
        let message = "\(function)() missing \(names.count) required positional \(plural): \(list)"
        return nok("TypeError(\(PythonText.repr(message)))")
    }
}

private func ok(_ text: String) -> JSONValue { ["ok": .string(text)] }
private func nok(_ text: String) -> JSONValue { ["error": .string(text)] }

extension JSONValue {
    /// Python truthiness of a JSON value.
    package var isTruthy: Bool {
        switch self {
        case .null: false
        case .bool(let flag): flag
        case .int(let number): number != 0
        case .double(let number): number != 0
        case .string(let text): !text.isEmpty
        case .array(let items): !items.isEmpty
        case .object(let members): !members.isEmpty
        }
    }
}

/// Python's `repr()` of a string: single quotes unless the text has a single quote and no double quote.
package enum PythonText {
    package static func repr(_ text: String) -> String {
        let useDouble = text.contains("'") && !text.contains("\"")
        let quote: Character = useDouble ? "\"" : "'"
        var out = String(quote)
        for character in text {
            switch character {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case quote: out += "\\\(quote)"
            default: out.append(character)
            }
        }
        out.append(quote)
        return out
    }

    /// Python's `repr()` of the value a JSON document decodes to (`None`, `True`, `[1, 'a']`, `{'k': 2.5}`).
    package static func repr(_ value: JSONValue) -> String {
        switch value {
        case .null: "None"
        case .bool(let flag): flag ? "True" : "False"
        case .int(let number): String(number)
        case .double(let number):
            number.isNaN ? "nan" : number.isInfinite ? (number < 0 ? "-inf" : "inf") : String(number)
        case .string(let text): repr(text)
        case .array(let items): "[" + items.map { repr($0) }.joined(separator: ", ") + "]"
        case .object(let members):
            "{" + members.map { "\(repr($0.key)): \(repr($0.value))" }.joined(separator: ", ") + "}"
        }
    }
}
