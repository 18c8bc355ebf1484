import Celery
import Foundation
import JSON
import RESP
import Synchronization

/// The tasks of Celery 5.7's `t/integration/tasks.py`, under their Celery names, as far as a Swift handler can
/// express them today. `Tests/CelerySuite/not-passing.txt` names the tasks still missing and why.
enum IntegrationTasks {
    static let prefix = "t.integration.tasks."

    /// `retry`'s `self.attempt`: Python keeps it on the task object, one per worker process.
    static let retryAttempt = Mutex(0)

    static func register(in registry: inout TaskRegistry) {
        registerArithmetic(in: &registry)
        registerFailures(in: &registry)
        registerRetries(in: &registry)
        registerRedis(in: &registry)
        registerSignatures(in: &registry)
        registerReplacing(in: &registry)
        registerErrbacks(in: &registry)
        registerRequest(in: &registry)
    }

    /// `ExpectedException(*args)` of the tasks module.
    static func expected(_ arguments: [JSONValue]) -> PythonException {
        PythonException(type: "ExpectedException", module: "t.integration.tasks", arguments: arguments)
    }

    /// Registers `t.integration.tasks.<name>`; `parameters` are the Python function's, where they matter (Celery
    /// calls an errback with more than one free parameter in place, with the failed task's request).
    static func task(
        _ registry: inout TaskRegistry,
        _ name: String,
        parameters: [String] = [],
        options: TaskOptions = TaskOptions(),
        _ handler: @escaping @Sendable (TaskContext, TaskArguments) async throws -> JSONValue
    ) {
        registry.register(prefix + name, parameters: parameters, options: options, arguments: handler)
    }

    static func registerArithmetic(in registry: inout TaskRegistry) {
        task(&registry, "identity") { _, arguments in
            try PythonCall("identity", arguments, [("x", nil)])["x"]
        }
        task(&registry, "add") { _, arguments in
            let call = try PythonCall("add", arguments, [("x", nil), ("y", nil), ("z", .null)])
            let sum = try Python.add(call["x"], call["y"])
            return Python.truthy(call["z"]) ? try Python.add(sum, call["z"]) : sum
        }
        task(&registry, "mul") { _, arguments in
            let call = try PythonCall("mul", arguments, [("x", nil), ("y", nil)])
            return try Python.multiply(call["x"], call["y"])
        }
        task(&registry, "add_not_typed") { _, arguments in
            let call = try PythonCall("add_not_typed", arguments, [("x", nil), ("y", nil)])
            return try Python.add(call["x"], call["y"])
        }
        task(&registry, "add_ignore_result", options: TaskOptions(ignoreResult: true)) { _, arguments in
            let call = try PythonCall("add_ignore_result", arguments, [("x", nil), ("y", nil)])
            return try Python.add(call["x"], call["y"])
        }
        task(&registry, "add_with_result") { _, arguments in
            let call = try PythonCall("add_with_result", arguments, [("x", nil), ("y", nil)])
            return try Python.add(call["x"], call["y"])
        }
        task(&registry, "tsum") { _, arguments in
            try Python.sum(PythonCall("tsum", arguments, [("nums", nil)])["nums"])
        }
        task(&registry, "xsum") { _, arguments in
            let nums = try PythonCall("xsum", arguments, [("nums", nil)])["nums"]
            guard case .array(let items) = nums else {
                throw PythonException.typeError("'\(pythonTypeName(of: nums))' object is not iterable")
            }
            return try items.reduce(JSONValue.int(0)) { total, item in
                if case .array = item { return try Python.add(total, Python.sum(item)) }
                return try Python.add(total, item)
            }
        }
        task(&registry, "delayed_sum") { _, arguments in
            let call = try PythonCall("delayed_sum", arguments, [("numbers", nil), ("pause_time", .int(1))])
            try await sleep(call["pause_time"])
            return try Python.sum(call["numbers"])
        }
        task(&registry, "delayed_sum_with_soft_guard") { _, arguments in
            let call = try PythonCall(
                "delayed_sum_with_soft_guard",
                arguments,
                [("numbers", nil), ("pause_time", .int(1))]
            )
            do {
                try await sleep(call["pause_time"])
            } catch is CancellationError {
                // The soft time limit cancels the handler: Python's `except SoftTimeLimitExceeded: return 0`.
                return .int(0)
            }
            return try Python.sum(call["numbers"])
        }
        task(&registry, "sleeping") { _, arguments in
            let call = try PythonCall("sleeping", arguments, [("i", nil)], keywords: true)
            try await sleep(call["i"])
            return .null
        }
        task(&registry, "write_to_file_and_return_int") { _, arguments in
            let call = try PythonCall("write_to_file_and_return_int", arguments, [("file_name", nil), ("i", nil)])
            guard let path = call["file_name"].stringValue else {
                throw PythonException.typeError("expected str, bytes or os.PathLike object")
            }
            let line = Data((pythonString(call["i"]) + "\n").utf8)
            if !FileManager.default.fileExists(atPath: path) {
                FileManager.default.createFile(atPath: path, contents: nil)
            }
            guard let handle = FileHandle(forWritingAtPath: path) else {
                throw PythonException(type: "OSError", "cannot open \(path)")
            }
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: line)
            return call["i"]
        }
        task(&registry, "return_exception") { _, arguments in
            .array([try PythonCall("return_exception", arguments, [("e", nil)])["e"], .bool(true)])
        }
        task(&registry, "print_unicode") { context, arguments in
            let call = try PythonCall(
                "print_unicode",
                arguments,
                [("log_message", .string("håå®ƒ valmuefrø")), ("print_message", .string("hiöäüß"))]
            )
            context.logger.warning("\(pythonString(call["log_message"]))")
            print(pythonString(call["print_message"]))
            return .null
        }
        task(&registry, "replaced_with_me") { _, _ in .bool(true) }
        task(&registry, "add_pydantic") { _, arguments in try addModel("add_pydantic", arguments) }
        task(&registry, "add_pydantic_string_annotations") { _, arguments in
            try addModel("add_pydantic_string_annotations", arguments)
        }
    }

    /// `add_pydantic(data: AddParameterModel) -> AddResultModel`: the model is a JSON object `{x, y}` on the wire
    /// and the result `{result}`.
    static func addModel(_ function: String, _ arguments: TaskArguments) throws -> JSONValue {
        let data = try PythonCall(function, arguments, [("data", nil)])["data"]
        guard let x = data["x"]?.intValue, let y = data["y"]?.intValue else {
            throw PythonException(
                type: "ValidationError",
                module: "pydantic_core._pydantic_core",
                "1 validation error for AddParameterModel"
            )
        }
        return ["result": .int(x + y)]
    }

    static func registerFailures(in registry: inout TaskRegistry) {
        task(&registry, "raise_error") { _, _ in throw PythonException.valueError("deliberate error") }
        task(&registry, "fail") { _, arguments in
            throw expected([.string("Task expected to fail")] + arguments.args)
        }
        task(&registry, "fail_unpickleable") { _, arguments in
            let call = try PythonCall("fail_unpickleable", arguments, [("foo", nil), ("bar", nil)])
            throw PythonException(
                type: "UnpickleableException",
                module: "t.integration.tasks",
                arguments: [call["foo"]]
            )
        }
        task(&registry, "reject_without_requeue") { _, _ in throw TaskReject("rejected", requeue: false) }
        task(&registry, "reject_then_succeed", options: TaskOptions(acksLate: true)) { context, _ in
            guard context.deliveryInfo.redelivered else { throw TaskReject(requeue: true) }
            return "second-pass"
        }
        task(&registry, "store_success_then_reject", options: TaskOptions(acksLate: true)) { context, _ in
            guard context.deliveryInfo.redelivered else {
                context.updateState("SUCCESS", meta: "first-pass")
                throw TaskReject(requeue: true)
            }
            return "dedup-pass"
        }
        task(&registry, "return_priority") { context, _ in
            .string("Priority: \(context.deliveryInfo.priority)")
        }
    }

    static func registerRetries(in registry: inout TaskRegistry) {
        task(&registry, "retry") { _, arguments in
            let call = try PythonCall("retry", arguments, [("return_value", .null)])
            if Python.truthy(call["return_value"]) {
                let attempt = retryAttempt.withLock { attempt in
                    defer { attempt = attempt >= 3 ? 0 : attempt + 1 }
                    return attempt
                }
                if attempt >= 3 { return call["return_value"] }
            }
            throw TaskRetry(countdown: .seconds(5), cause: expected([]))
        }
        task(&registry, "retry_once") { context, arguments in
            let call = try PythonCall(
                "retry_once",
                arguments,
                [],
                variadic: true,
                keywordOnly: [("expires", .null), ("max_retries", .int(1)), ("countdown", .double(0.1))]
            )
            if context.retries > 0 { return .int(context.retries) }
            // The message's own expiry (Celery's `expires=120.0` task option is the sender's) carries over.
            throw TaskRetry(countdown: duration(call["countdown"]), maxRetries: call["max_retries"].intValue)
        }
        task(&registry, "retry_once_with_result") { context, _ in
            guard context.retries > 0 else { throw TaskRetry(countdown: .zero, maxRetries: 3) }
            return .int(context.retries)
        }
        task(&registry, "retry_once_ignore_result", options: TaskOptions(ignoreResult: true)) { context, _ in
            guard context.retries > 0 else { throw TaskRetry(countdown: .zero, maxRetries: 3) }
            return .int(context.retries)
        }
        task(&registry, "retry_once_priority") { context, arguments in
            let call = try PythonCall(
                "retry_once_priority",
                arguments,
                [],
                variadic: true,
                keywordOnly: [("expires", .double(60)), ("max_retries", .int(1)), ("countdown", .double(0.1))]
            )
            if context.retries > 0 { return .int(context.deliveryInfo.priority) }
            throw TaskRetry(countdown: duration(call["countdown"]), maxRetries: call["max_retries"].intValue)
        }
        task(&registry, "retry_once_headers") { context, arguments in
            let call = try PythonCall(
                "retry_once_headers",
                arguments,
                [],
                variadic: true,
                keywordOnly: [("max_retries", .int(1)), ("countdown", .double(0.1))]
            )
            if context.retries > 0 { return .object(context.headers) }
            throw TaskRetry(countdown: duration(call["countdown"]), maxRetries: call["max_retries"].intValue)
        }
        task(&registry, "retry_with_args_after_kwargs", parameters: ["foo", "bar", "label"]) { context, arguments in
            let call = try PythonCall(
                "retry_with_args_after_kwargs",
                arguments,
                [("foo", nil), ("bar", nil), ("label", .null)]
            )
            if context.retries == 0 {
                throw TaskRetry(
                    countdown: .zero,
                    maxRetries: 1,
                    args: [try Python.add(call["foo"], 1), try Python.add(call["bar"], 1)]
                )
            }
            return [
                "foo": call["foo"], "bar": call["bar"], "label": call["label"], "retries": .int(context.retries),
                "is_eager": false,
            ]
        }
        task(&registry, "retry_with_kwargs_after_args", parameters: ["foo", "bar"]) { context, arguments in
            let call = try PythonCall("retry_with_kwargs_after_args", arguments, [("foo", nil), ("bar", nil)])
            if context.retries == 0 {
                throw TaskRetry(countdown: .zero, maxRetries: 1, kwargs: ["foo": try Python.add(call["foo"], 1)])
            }
            return ["foo": call["foo"], "bar": call["bar"], "retries": .int(context.retries), "is_eager": false]
        }
        task(&registry, "retry_unpickleable") { _, arguments in
            let call = try PythonCall(
                "retry_unpickleable",
                arguments,
                [("foo", nil), ("bar", nil)],
                keywordOnly: [("retry_kwargs", nil)]
            )
            let retryKwargs = call["retry_kwargs"].objectValue ?? [:]
            let cause = PythonException(
                type: "UnpickleableException",
                module: "t.integration.tasks",
                arguments: [call["foo"]]
            )
            throw TaskRetry(
                countdown: retryKwargs["countdown"].map(duration) ?? .seconds(1),
                maxRetries: retryKwargs["max_retries"].map { $0.intValue } ?? 3,
                cause: cause
            )
        }
        let autoretry = AutoRetry(maxRetries: 1, backoff: .seconds(1)) { error in
            (error as? PythonException)?.pythonExceptionType == "ValueError"
        }
        // ClassBasedAutoRetryTask: a class-based task registered under its own name.
        registry.register("auto_retry_class_task", options: TaskOptions(autoretry: autoretry)) { context, _ in
            guard context.retries > 0 else { throw PythonException(type: "ValueError", arguments: []) }
            return .int(context.retries)
        }
    }

    static func registerRedis(in registry: inout TaskRegistry) {
        task(&registry, "redis_echo", parameters: ["message", "redis_key"]) { context, arguments in
            let call = try PythonCall("redis_echo", arguments, [("message", nil), ("redis_key", "redis-echo")])
            try await rpush(context, call["redis_key"], call["message"])
            return .null
        }
        task(&registry, "redis_count") { context, arguments in
            let call = try PythonCall("redis_count", arguments, [("redis_key", "redis-count")])
            _ = try await context.redis.send(RESPCommand("INCR", pythonString(call["redis_key"])))
            return .null
        }
        task(&registry, "sum_and_record") { context, arguments in
            let call = try PythonCall("sum_and_record", arguments, [("values", nil), ("redis_key", nil)])
            let total = try Python.sum(call["values"])
            try await rpush(context, call["redis_key"], .string(context.id))
            return total
        }
        task(&registry, "errback_old_style") { context, arguments in
            let id = try PythonCall("errback_old_style", arguments, [("request_id", nil)])["request_id"]
            _ = try await context.redis.send(RESPCommand("INCR", pythonString(id)))
            return id
        }
        task(&registry, "errback_old_style_with_args", parameters: ["request_id", "label"]) { context, arguments in
            let call = try PythonCall("errback_old_style_with_args", arguments, [("request_id", nil), ("label", nil)])
            try await rpush(context, call["request_id"], call["label"])
            return .null
        }
    }

    static func registerErrbacks(in registry: inout TaskRegistry) {
        // New-style errbacks: the worker where the task failed calls them with (request, exc, traceback).
        task(&registry, "errback_new_style", parameters: ["request", "exc", "tb"]) { context, arguments in
            let id =
                try PythonCall("errback_new_style", arguments, [("request", nil), ("exc", nil), ("tb", nil)])[
                    "request"
                ]["id"] ?? .null
            _ = try await context.redis.send(RESPCommand("INCR", pythonString(id)))
            return id
        }
        task(&registry, "errback_new_style_with_args", parameters: ["request", "exc", "tb", "label"]) {
            context,
            arguments in
            let call = try PythonCall(
                "errback_new_style_with_args",
                arguments,
                [("request", nil), ("exc", nil), ("tb", nil), ("label", nil)]
            )
            try await rpush(context, call["request"]["id"] ?? .null, call["label"])
            return .null
        }
    }

    static func registerSignatures(in registry: inout TaskRegistry) {
        let add: JSONValue = signature("add")
        let nested: [(String, JSONValue)] = [
            ("chain_chain", chain([chain([add])])),
            ("chain_group", chain([group([add])])),
            ("chain_chord", chain([chord([add], add)])),
            ("group_chain", group([chain([add])])),
            ("group_group", group([group([add])])),
            ("group_chord", group([chord([add], add)])),
            ("chord_chain", chord([chain([add])], add)),
            ("chord_group", chord([group([add])], add)),
            ("chord_chord", chord([chord([add], add)], add)),
        ]
        for (name, value) in nested {
            task(&registry, "return_nested_signature_" + name) { _, _ in value }
        }
        task(&registry, "rebuild_signature") { _, arguments in
            try checkSignature(PythonCall("rebuild_signature", arguments, [("sig_dict", nil)])["sig_dict"])
            return .null
        }
    }

    /// `Signature.from_dict` and the walk over its parts that `rebuild_signature` does: a TypeError for anything
    /// that is not a signature.
    static func checkSignature(_ value: JSONValue) throws {
        guard case .object(let object) = value, object["task"]?.stringValue != nil else {
            throw PythonException.typeError("\(value) is not a signature object")
        }
        let kwargs = object["kwargs"] ?? [:]
        switch object["subtask_type"]?.stringValue {
        case "chain", "group":
            for member in members(kwargs["tasks"]) { try checkSignature(member) }
        case "chord":
            let header = kwargs["header"] ?? .array([])
            if case .object = header {
                try checkSignature(header)
            } else {
                for member in members(header) { try checkSignature(member) }
            }
            try checkSignature(kwargs["body"] ?? .null)
        default:
            break
        }
    }

    /// A list of signatures, or one signature alone.
    static func members(_ value: JSONValue?) -> [JSONValue] {
        switch value {
        case .array(let items)?: items
        case .object?: [value!]
        default: []
        }
    }

    /// The dict of `name.s(*args, **kwargs)` (`si` when immutable), `name` in the tasks module unless `celery.*`.
    static func signature(
        _ name: String,
        args: [JSONValue] = [],
        kwargs: JSONObject = [:],
        options: JSONObject = [:],
        subtaskType: JSONValue = .null,
        immutable: Bool = false
    ) -> JSONValue {
        [
            "task": .string(name.hasPrefix("celery.") ? name : prefix + name), "args": .array(args),
            "kwargs": .object(kwargs), "options": .object(options), "subtask_type": subtaskType,
            "immutable": .bool(immutable),
        ]
    }

    static func chain(_ tasks: [JSONValue], options: JSONObject = [:]) -> JSONValue {
        signature("celery.chain", kwargs: ["tasks": .array(tasks)], options: options, subtaskType: "chain")
    }

    static func group(_ tasks: [JSONValue]) -> JSONValue {
        signature("celery.group", kwargs: ["tasks": .array(tasks)], subtaskType: "group")
    }

    static func chord(_ header: [JSONValue], _ body: JSONValue) -> JSONValue {
        signature("celery.chord", kwargs: ["header": group(header), "body": body, "kwargs": [:]], subtaskType: "chord")
    }

    static func rpush(_ context: TaskContext, _ key: JSONValue, _ value: JSONValue) async throws {
        _ = try await context.redis.send(RESPCommand("RPUSH", pythonString(key), pythonString(value)))
    }

    /// `str(value)` for the scalars the tasks write to Redis and files.
    static func pythonString(_ value: JSONValue) -> String {
        switch value {
        case .string(let s): s
        case .int(let i): String(i)
        case .double(let d): String(d)
        case .bool(let b): b ? "True" : "False"
        case .null: "None"
        // kombu's JSON for bytes, datetimes, decimals...: `{"__type__": "bytes", "__value__": "..."}`.
        case .object(let object) where object.keys.count == 2 && object["__type__"] != nil:
            object["__value__"]?.stringValue ?? value.description
        default: value.description
        }
    }

    static func duration(_ seconds: JSONValue) -> Duration {
        .nanoseconds(Int64(max(0, seconds.doubleValue ?? 0) * 1e9))
    }

    static func sleep(_ seconds: JSONValue) async throws {
        guard let value = seconds.doubleValue else {
            throw PythonException.typeError("'\(pythonTypeName(of: seconds))' object cannot be interpreted as a float")
        }
        guard value >= 0 else { throw PythonException.valueError("sleep length must be non-negative") }
        try await Task.sleep(for: duration(seconds))
    }
}
