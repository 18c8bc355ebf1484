import Celery
import JSON
import RESP

/// Tasks that replace themselves (Celery's `Task.replace`) and tasks that report their request, after Celery's
/// own integration tasks (t/integration/tasks.py).
extension TaskCatalog {
    static func registerReplacing(in registry: inout TaskRegistry) {
        registry.register(
            "tasks.add_replaced",
            parameters: ["x", "y"],
            documentation: "x + y, by replacing itself with tasks.add(x, y)"
        ) { (_, x: JSONValue, y: JSONValue) -> NoResult in
            throw TaskReplace(Signature("tasks.add", args: [x, y]))
        }
        registry.register(
            "tasks.add_replaced_with_chain",
            parameters: ["x", "y"],
            documentation: "x + y, by replacing itself with the chain tasks.add(x, y) | tasks.identity()"
        ) { (_, x: JSONValue, y: JSONValue) -> NoResult in
            throw TaskReplace(Canvas.chain([Signature("tasks.add", args: [x, y]).json, identity.json]))
        }
        registry.register(
            "tasks.replace_with_chain",
            documentation:
                "replaces itself with tasks.identity(*args) | tasks.identity(), linked to tasks.redis_echo "
                + "(link_msg given: redis_echo.si(link_msg, redis_key); else the chain's result)"
        ) { _, arguments in
            let chain = Canvas.chain(
                [Signature("tasks.identity", args: arguments.args).json, identity.json],
                options: ["link": .array([echoLink(arguments.kwargs["link_msg"], key: arguments.kwargs["redis_key"])])]
            )
            throw TaskReplace(chain)
        }
        registry.register(
            "tasks.replace_with_chain_which_raises",
            documentation:
                "replaces itself with tasks.identity(*args) | tasks.fail(), with link_error tasks.redis_echo "
                + "(link_msg given: redis_echo.si(link_msg, redis_key); else the failed task's id)"
        ) { _, arguments in
            let chain = Canvas.chain(
                [Signature("tasks.identity", args: arguments.args).json, Signature("tasks.fail").json],
                options: [
                    "link_error": .array([echoLink(arguments.kwargs["link_msg"], key: arguments.kwargs["redis_key"])])
                ]
            )
            throw TaskReplace(chain)
        }
        registry.register("tasks.replace_with_empty_chain", documentation: "replaces itself with chain(): fails") {
            _,
            _ in
            throw TaskReplace(Canvas.chain([]))
        }
        registry.register(
            "tasks.replace_with_chain_which_contains_a_group",
            parameters: [],
            documentation: "[4, 4]: replaces itself with tasks.add(1, 2) | group(tasks.add(1), tasks.add(1))"
        ) { (_) -> NoResult in
            let group = Canvas.group([Signature("tasks.add", args: [1]).json, Signature("tasks.add", args: [1]).json])
            throw TaskReplace(Canvas.chain([Signature("tasks.add", args: [1, 2]).json, group]))
        }
        registry.register(
            "tasks.add_to_all",
            parameters: ["nums", "val"],
            documentation: "[n + val for n in nums], by replacing itself with group(tasks.add(n, val) ...)"
        ) { (_, nums: [JSONValue], val: JSONValue) -> NoResult in
            throw TaskReplace(Canvas.group(nums.map { Signature("tasks.add", args: [$0, val]).json }))
        }
        registry.register(
            "tasks.fail_replaced",
            parameters: ["message"],
            documentation: "raises ValueError(message), by replacing itself with tasks.fail.si(message)"
        ) { (_, message: JSONValue) -> NoResult in
            throw TaskReplace(Signature("tasks.fail", args: [message], immutable: true))
        }
        registry.register(
            "tasks.record_replaced_task_nesting",
            parameters: ["replacements", "nesting"],
            documentation:
                "replaces itself `replacements` times, each time appending request.replaced_task_nesting to nesting; "
                + "returns the list"
        ) { (context, replacements: Int, nesting: [JSONValue]?) -> JSONValue in
            let nesting = (nesting ?? []) + [.int(context.replacedTaskNesting)]
            guard replacements > 0 else { return .array(nesting) }
            let next = Signature(
                "tasks.record_replaced_task_nesting",
                args: [.int(replacements - 1), .array(nesting)]
            )
            // Keeps the caller's result queue, as Celery's task does for the RPC backend.
            try context.replace(
                with: Canvas.setting(["reply_to": context.replyTo.map { .string($0) } ?? .null], on: next.json)
            )
        }
        registry.register(
            "tasks.second_order_replace1",
            parameters: ["key", "state"],
            documentation:
                "RPUSH key 'In A', replace with second_order_replace2(key) | second_order_replace1.si(key, True), "
                + "which pushes 'Out A'"
        ) { (context, key: String, state: Bool?) -> NoResult in
            try await context.redis.send(RESPCommand("RPUSH", key, state == true ? "Out A" : "In A"))
            guard state == true else {
                throw TaskReplace(
                    Canvas.chain([
                        Signature("tasks.second_order_replace2", args: [.string(key)]).json,
                        Signature("tasks.second_order_replace1", args: [.string(key), true], immutable: true).json,
                    ])
                )
            }
            return NoResult()
        }
        registry.register(
            "tasks.second_order_replace2",
            parameters: ["key", "state"],
            documentation:
                "RPUSH key 'In B', replace with redis_echo('In/Out C', key) | second_order_replace2.si(key, True), "
                + "which pushes 'Out B'"
        ) { (context, key: String, state: Bool?) -> NoResult in
            try await context.redis.send(RESPCommand("RPUSH", key, state == true ? "Out B" : "In B"))
            guard state == true else {
                throw TaskReplace(
                    Canvas.chain([
                        Signature("tasks.redis_echo", args: ["In/Out C", .string(key)], immutable: true).json,
                        Signature("tasks.second_order_replace2", args: [.string(key), true], immutable: true).json,
                    ])
                )
            }
            return NoResult()
        }
        registry.register(
            "tasks.redis_echo",
            parameters: ["message", "redis_key"],
            documentation: "RPUSH redis_key (default 'redis-echo') message"
        ) { (context, message: JSONValue, key: String?) -> NoResult in
            let text = message.stringValue ?? message.serializedString()
            try await context.redis.send(RESPCommand("RPUSH", key ?? "redis-echo", text))
            return NoResult()
        }
        registerRequestReporting(in: &registry)
    }

    /// Tasks that return fields of their request, as Celery's integration tasks do.
    static func registerRequestReporting(in registry: inout TaskRegistry) {
        registry.register("tasks.ids", parameters: ["i"], documentation: "[request.root_id, request.parent_id, i]") {
            (context, i: JSONValue) -> JSONValue in
            [context.rootID.map(JSONValue.string) ?? .null, context.parentID.map(JSONValue.string) ?? .null, i]
        }
        registry.register(
            "tasks.collect_ids",
            parameters: ["res", "i"],
            documentation: "[res, [request.root_id, request.parent_id, i]]"
        ) { (context, res: JSONValue, i: JSONValue) -> JSONValue in
            [
                res,
                [context.rootID.map(JSONValue.string) ?? .null, context.parentID.map(JSONValue.string) ?? .null, i],
            ]
        }
        registry.register("tasks.return_priority", documentation: "'Priority: <delivery_info priority>'") {
            context,
            _ in
            .string("Priority: \(context.deliveryInfo.priority)")
        }
        registry.register("tasks.return_properties", parameters: [], documentation: "request.properties") {
            (context) -> JSONValue in
            .object(context.properties)
        }
        registry.register("tasks.return_request_eta", parameters: [], documentation: "request.eta (None without)") {
            (context) -> JSONValue in
            context.headers["eta"] ?? .null
        }
        registry.register(
            "tasks.return_request_time_limits",
            parameters: [],
            documentation: "{time_limit: request.time_limit, soft_time_limit: request.soft_time_limit}"
        ) { (context) -> JSONValue in
            [
                "time_limit": context.timeLimit.map(number) ?? .null,
                "soft_time_limit": context.softTimeLimit.map(number) ?? .null,
            ]
        }
    }

    private static let identity = Signature("tasks.identity")

    /// `redis_echo.si(message, redis_key=key)` when a message is given, else `redis_echo.s(redis_key=key)`.
    private static func echoLink(_ message: JSONValue?, key: JSONValue?) -> JSONValue {
        var kwargs: JSONObject = [:]
        if let key, !key.isNull { kwargs["redis_key"] = key }
        guard let message, !message.isNull else { return Signature("tasks.redis_echo", kwargs: kwargs).json }
        return Signature("tasks.redis_echo", args: [message], kwargs: kwargs, immutable: true).json
    }

    /// Seconds as Python shows them: an int when whole.
    private static func number(_ seconds: Double) -> JSONValue {
        seconds.rounded() == seconds && abs(seconds) < 1e15 ? .int(Int(seconds)) : .double(seconds)
    }
}
