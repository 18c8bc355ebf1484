import Celery
import JSON
import RESP

/// The tasks of t/integration/tasks.py that replace themselves (`self.replace(...)`) or report their request.
extension IntegrationTasks {
    static func registerReplacing(in registry: inout TaskRegistry) {
        task(&registry, "add_replaced") { _, arguments in
            let call = try PythonCall("add_replaced", arguments, [("x", nil), ("y", nil)])
            throw TaskReplace(signature("add", args: [call["x"], call["y"]]))
        }
        task(&registry, "add_replaced_with_chain") { _, arguments in
            let call = try PythonCall("add_replaced_with_chain", arguments, [("x", nil), ("y", nil)])
            throw TaskReplace(chain([signature("add", args: [call["x"], call["y"]]), signature("identity")]))
        }
        task(&registry, "record_replaced_task_nesting") { context, arguments in
            let call = try PythonCall(
                "record_replaced_task_nesting",
                arguments,
                [("replacements", nil), ("nesting", .null)]
            )
            var nesting = call["nesting"].arrayValue ?? []
            nesting.append(.int(context.replacedTaskNesting))
            guard Python.truthy(call["replacements"]) else { return .array(nesting) }
            let next = signature(
                "record_replaced_task_nesting",
                args: [try Python.add(call["replacements"], -1), .array(nesting)],
                options: context.replyTo.map { ["reply_to": .string($0)] } ?? [:]
            )
            throw TaskReplace(next)
        }
        task(&registry, "replace_with_chain") { _, arguments in
            let call = try PythonCall(
                "replace_with_chain",
                arguments,
                [],
                variadic: true,
                keywordOnly: [("link_msg", .null)]
            )
            throw TaskReplace(
                chain(
                    [signature("identity", args: call.rest), signature("identity")],
                    options: ["link": .array([echoLink(call["link_msg"])])]
                )
            )
        }
        task(&registry, "replace_with_chain_which_raises") { _, arguments in
            let call = try PythonCall(
                "replace_with_chain_which_raises",
                arguments,
                [],
                variadic: true,
                keywordOnly: [("link_msg", .null)]
            )
            throw TaskReplace(
                chain(
                    [signature("identity", args: call.rest), signature("raise_error")],
                    options: ["link_error": .array([echoLink(call["link_msg"])])]
                )
            )
        }
        task(&registry, "replace_with_empty_chain") { _, _ in throw TaskReplace(chain([])) }
        task(&registry, "replace_with_chain_which_contains_a_group") { _, _ in
            throw TaskReplace(
                chain([
                    signature("add", args: [1, 2]),
                    group([signature("add", args: [1]), signature("add", args: [1])]),
                ])
            )
        }
        task(&registry, "add_to_all") { _, arguments in
            let call = try PythonCall("add_to_all", arguments, [("nums", nil), ("val", nil)])
            let members = (call["nums"].arrayValue ?? []).map { signature("add", args: [$0, call["val"]]) }
            throw TaskReplace(group(members))
        }
        task(&registry, "replace_with_stamped_task") { _, arguments in
            let call = try PythonCall("replace_with_stamped_task", arguments, [("replace_with", .null)])
            let replacement = call["replace_with"].isNull ? signature("replaced_with_me") : call["replace_with"]
            // StampedTaskOnReplace.on_replace: sig.stamp(StampOnReplace()).
            throw TaskReplace(
                Canvas.setting(
                    ["stamped_headers": ["StampOnReplace"], "StampOnReplace": "This is the replaced task"],
                    on: replacement
                )
            )
        }
        task(&registry, "chain_add") { context, arguments in
            let call = try PythonCall("chain_add", arguments, [("x", nil), ("y", nil)])
            try await context.send(
                chain([signature("add", args: [call["x"], call["x"]]), signature("add", args: [call["y"]])])
            )
            return .null
        }
        task(&registry, "chord_add") { context, arguments in
            let call = try PythonCall("chord_add", arguments, [("x", nil), ("y", nil)])
            try await context.send(
                chord([signature("add", args: [call["x"], call["x"]])], signature("add", args: [call["y"]]))
            )
            return .null
        }
        task(&registry, "build_chain_inside_task") { context, arguments in
            _ = try PythonCall("build_chain_inside_task", arguments, [])
            let canvas = chain([
                signature("add", args: [1, 1]),
                signature("add", args: [2]),
                group([signature("add", args: [3]), signature("add", args: [4])]),
                signature("add", args: [5]),
            ])
            return try await context.send(canvas).resultTuple
        }
        task(&registry, "add_to_all_to_chord") { context, arguments in
            let call = try PythonCall("add_to_all_to_chord", arguments, [("nums", nil), ("val", nil)])
            for num in call["nums"].arrayValue ?? [] {
                try await context.addToChord(signature("add", args: [num, call["val"]]))
            }
            return .int(0)
        }
        task(&registry, "add_chord_to_chord") { context, arguments in
            let call = try PythonCall("add_chord_to_chord", arguments, [("nums", nil), ("val", nil)])
            let members = (call["nums"].arrayValue ?? []).map { signature("add", args: [$0, call["val"]]) }
            try await context.addToChord(chord(members, signature("tsum")))
            return .int(0)
        }
        task(&registry, "fail_replaced") { _, arguments in
            throw TaskReplace(signature("fail", args: arguments.args, immutable: true))
        }
        task(&registry, "second_order_replace1") { context, arguments in
            let call = try PythonCall("second_order_replace1", arguments, [("state", false)])
            guard Python.truthy(call["state"]) else {
                try await rpush(context, "redis-echo", "In A")
                throw TaskReplace(
                    chain([
                        signature("second_order_replace2"),
                        signature("second_order_replace1", kwargs: ["state": true], immutable: true),
                    ])
                )
            }
            try await rpush(context, "redis-echo", "Out A")
            return .null
        }
        task(&registry, "second_order_replace2") { context, arguments in
            let call = try PythonCall("second_order_replace2", arguments, [("state", false)])
            guard Python.truthy(call["state"]) else {
                try await rpush(context, "redis-echo", "In B")
                throw TaskReplace(
                    chain([
                        signature("redis_echo", args: ["In/Out C"]),
                        signature("second_order_replace2", kwargs: ["state": true], immutable: true),
                    ])
                )
            }
            try await rpush(context, "redis-echo", "Out B")
            return .null
        }
    }

    /// `redis_echo.s()`, or `redis_echo.si(link_msg)` when a message is given.
    static func echoLink(_ message: JSONValue) -> JSONValue {
        guard !message.isNull else { return signature("redis_echo") }
        return signature("redis_echo", args: [message], immutable: true)
    }

    static func registerRequest(in registry: inout TaskRegistry) {
        task(&registry, "ids") { context, arguments in
            let i = try PythonCall("ids", arguments, [("i", nil)])["i"]
            return [context.rootID.map(JSONValue.string) ?? .null, context.parentID.map(JSONValue.string) ?? .null, i]
        }
        task(&registry, "collect_ids") { context, arguments in
            let call = try PythonCall("collect_ids", arguments, [("res", nil), ("i", nil)])
            let ids: JSONValue = [
                context.rootID.map(JSONValue.string) ?? .null, context.parentID.map(JSONValue.string) ?? .null,
                call["i"],
            ]
            return [call["res"], ids]
        }
        task(&registry, "redis_echo_group_id") { context, arguments in
            let call = try PythonCall("redis_echo_group_id", arguments, [("_", nil), ("redis_key", "redis-group-ids")])
            try await rpush(context, call["redis_key"], context.groupID.map(JSONValue.string) ?? .null)
            return .null
        }
        task(&registry, "return_request_eta") { context, _ in
            context.headers["eta"] ?? .null
        }
        task(&registry, "return_properties") { context, _ in .object(context.properties) }
        task(&registry, "return_request_time_limits") { context, _ in
            ["time_limit": number(context.timeLimit), "soft_time_limit": number(context.softTimeLimit)]
        }
        task(
            &registry,
            "task_with_declared_time_limits",
            options: TaskOptions(softTimeLimit: .seconds(45), timeLimit: .seconds(60))
        ) { context, _ in
            ["time_limit": number(context.timeLimit), "soft_time_limit": number(context.softTimeLimit)]
        }
    }

    /// A limit in seconds as Python has it: an int when whole.
    static func number(_ value: Double?) -> JSONValue {
        guard let value else { return .null }
        if let whole = Int(exactly: value) { return .int(whole) }
        return .double(value)
    }
}
