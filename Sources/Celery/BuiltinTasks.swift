import CeleryProtocol
import JSON

/// Celery's built-in tasks (celery/app/builtins.py), which every Python worker registers: the ones a Python client
/// sends to Redis (`add.map(...)`, `add.starmap(...)`, the `celery.chunks` task) and the ones an operator or beat
/// may (`celery.backend_cleanup`), and `celery.accumulate`, the body of a group replacement's chord. `inspect registered` hides them unless asked with `builtins=True`, as Celery does.
extension TaskRegistry {
    /// The names Celery gives its built-in tasks; `inspect registered` leaves every `celery.` name out by default.
    package static let builtinPrefix = "celery."

    /// This registry with Celery's built-in tasks added where the package registered none of that name.
    package func withBuiltins() -> TaskRegistry {
        var registry = self
        // Registered under their Python function's name where it differs from the task's (`xmap`, `xstarmap`),
        // then filed under the task's name.
        let taskNames = ["celery.xmap": "celery.map", "celery.xstarmap": "celery.starmap"]
        var builtins = TaskRegistry()
        builtins.register("celery.xmap", parameters: ["task", "it"]) { (context, task: JSONValue, it: JSONValue) in
            // Celery: `[task(item) for item in it]`, the handler called in-process for each item.
            let handler = try BuiltinTasks.handler(named: task, in: context)
            var results: [JSONValue] = []
            for item in try BuiltinTasks.items(it) {
                results.append(try await handler.call([item], context))
            }
            return JSONValue.array(results)
        }
        builtins.register("celery.xstarmap", parameters: ["task", "it"]) {
            (context, task: JSONValue, it: JSONValue) in
            // Celery: `[task(*item) for item in it]`.
            let handler = try BuiltinTasks.handler(named: task, in: context)
            var results: [JSONValue] = []
            for item in try BuiltinTasks.items(it) {
                guard case .array(let arguments) = item else {
                    throw PythonException.typeError(
                        "\(handler.function) argument after * must be an iterable, not \(pythonTypeName(of: item))"
                    )
                }
                results.append(try await handler.call(arguments, context))
            }
            return JSONValue.array(results)
        }
        builtins.register("celery.chunks", parameters: ["task", "it", "n"]) {
            (context, task: JSONValue, it: JSONValue, n: Int) in
            // Celery: `chunks(task, it, n)()`, a group of `celery.starmap` tasks of n items each, sent from here;
            // the result is the GroupResult as a tuple.
            try await BuiltinTasks.publishChunks(task: task, items: try BuiltinTasks.items(it), size: n, context)
        }
        builtins.register("celery.backend_cleanup", parameters: []) { (_: TaskContext) in
            // Redis results expire by themselves (SETEX): Celery's cleanup does nothing for Redis either.
            JSONValue.null
        }
        builtins.register("celery.chord_unlock") { _, _ in
            throw PythonException(
                type: "NotImplementedError",
                "celery.chord_unlock is for result backends without native chords; on Redis the worker that "
                    + "completes a chord's header sends its body"
            )
        }
        builtins.register("celery.accumulate", documentation: "args, or args[index]") { _, arguments in
            // The body of the chord a group replacement becomes (`Task.replace`): the header's results, or one.
            guard let index = arguments.kwargs["index"], !index.isNull else { return .array(arguments.args) }
            guard let position = index.intValue else {
                throw PythonException.typeError(
                    "tuple indices must be integers or slices, not \(pythonTypeName(of: index))"
                )
            }
            let count = arguments.args.count
            let resolved = position < 0 ? position + count : position
            guard resolved >= 0, resolved < count else {
                throw PythonException(type: "IndexError", "tuple index out of range")
            }
            return arguments.args[resolved]
        }
        builtins.register("celery.chain") { _, _ in
            throw PythonException(type: "NotImplementedError", "chain is not a real task")
        }
        for function in builtins.names {
            guard let builtin = builtins[function] else { continue }
            let name = taskNames[function] ?? function
            guard registry[name] == nil else { continue }
            let run = builtin.run
            // Argument errors name the function as Python does, by its qualified name:
            // `add_map_task.<locals>.xmap() missing 1 required positional argument: 'it'`.
            let short = (function.split(separator: ".").last.map(String.init) ?? function) + "()"
            let qualified = BuiltinTasks.pythonFunctions[name].map { $0 + "()" } ?? short
            var task = RegisteredTask(
                name: name,
                parameters: builtin.parameters,
                options: builtin.options,
                documentation: builtin.documentation
            ) { context, arguments in
                do {
                    return try await run(context, arguments)
                } catch let error as PythonException
                    where error.pythonExceptionType == "TypeError"
                    && error.pythonExceptionArguments.first?.stringValue?.hasPrefix(short) == true
                {
                    let message = error.pythonExceptionArguments.first?.stringValue ?? ""
                    throw PythonException.typeError(qualified + message.dropFirst(short.count))
                }
            }
            task.parameterTypes = builtin.parameterTypes
            task.resultType = builtin.resultType
            registry.tasks[name] = task
        }
        return registry
    }
}

/// The pieces the built-in tasks share.
package enum BuiltinTasks {
    /// The qualified names of Celery's functions behind the built-in tasks, as Python's TypeErrors name them.
    package static let pythonFunctions = [
        "celery.map": "add_map_task.<locals>.xmap",
        "celery.starmap": "add_starmap_task.<locals>.xstarmap",
        "celery.chunks": "add_chunk_task.<locals>.chunks",
        "celery.backend_cleanup": "add_backend_cleanup_task.<locals>.backend_cleanup",
    ]

    /// A registered handler called in-process, as Celery's built-ins call `signature(task).type`.
    package struct Handler: Sendable {
        package let task: RegisteredTask

        /// How Python names the function in a TypeError: `add()`.
        package var function: String { (task.name.split(separator: ".").last.map(String.init) ?? task.name) + "()" }

        /// Runs the handler with these positional arguments, in a context named after it (same id and message).
        package func call(_ arguments: [JSONValue], _ context: TaskContext) async throws -> JSONValue {
            var inner = context
            inner.name = task.name
            return try await task.run(inner, TaskArguments(args: arguments, kwargs: [:]))
        }
    }

    /// The handler a signature (`{"task": "tasks.add", ...}`, or a bare name) names on this worker; Celery's
    /// NotRegistered when there is none.
    package static func handler(named signature: JSONValue, in context: TaskContext) throws -> Handler {
        let name = signature.stringValue ?? signature["task"]?.stringValue ?? ""
        guard let task = context.worker?.registry[name], !name.isEmpty else {
            throw PythonException(type: "NotRegistered", module: "celery.exceptions", arguments: [.string(name)])
        }
        return Handler(task: task)
    }

    /// The items of `it`: a list (a JSON array; Python's tuples and generators arrive as one).
    package static func items(_ it: JSONValue) throws -> [JSONValue] {
        switch it {
        case .array(let items): return items
        case .object(let members): return members.keys.map { .string($0) }  // Python iterates a dict's keys
        case .string(let text): return text.map { .string(String($0)) }
        default: throw PythonException.typeError("'\(pythonTypeName(of: it))' object is not iterable")
        }
    }

    /// `items` split into lists of at most `size` (Celery's `chunks` helper).
    package static func chunked(_ items: [JSONValue], size: Int) -> [[JSONValue]] {
        guard size > 0 else { return items.isEmpty ? [] : [items] }
        return stride(from: 0, to: items.count, by: size).map { Array(items[$0..<min($0 + size, items.count)]) }
    }

    /// The group a `chunks` signature (`add.chunks(it, n)`: kwargs `task`, `it`, `n`) is sent as.
    package static func chunksGroup(of signature: JSONValue) -> JSONValue {
        let kwargs = signature["kwargs"] ?? .null
        return chunksGroup(
            task: kwargs["task"] ?? .null,
            items: kwargs["it"]?.arrayValue ?? [],
            size: kwargs["n"]?.intValue ?? 0
        )
    }

    /// The group signature `chunks(task, it, n)` expands to: one immutable `celery.starmap` per chunk.
    package static func chunksGroup(task: JSONValue, items: [JSONValue], size: Int) -> JSONValue {
        let starmaps: [JSONValue] = chunked(items, size: size).map { part in
            [
                "task": "celery.starmap",
                "args": [],
                "kwargs": ["task": task, "it": .array(part)],
                "options": [:],
                "subtask_type": "xstarmap",
                "immutable": true,
            ]
        }
        return [
            "task": "celery.group",
            "args": [],
            "kwargs": ["tasks": .array(starmaps)],
            "options": [:],
            "subtask_type": "group",
            "immutable": false,
        ]
    }

    /// Sends the chunks' group from the running task (its children, as Celery's `apply_async` inside a task) and
    /// returns the GroupResult tuple `[[gid, null], [[[id, null], null], ...]]`.
    static func publishChunks(
        task: JSONValue,
        items: [JSONValue],
        size: Int,
        _ context: TaskContext
    )
        async throws -> JSONValue
    {
        guard size > 0 else { throw PythonException.valueError("chunk size must be positive, not \(size)") }
        guard let worker = context.worker else { throw PythonException.runtimeError("celery.chunks needs a worker") }
        let origin = Worker.FollowUpOrigin(
            parentID: context.id,
            rootID: context.headers["root_id"]?.stringValue ?? context.id,
            queue: context.deliveryInfo.routingKey.isEmpty
                ? worker.configuration.queues.first ?? "celery" : context.deliveryInfo.routingKey
        )
        let group = chunksGroup(task: task, items: items, size: size)
        guard let expansion = worker.expand(group, prepending: .null, from: origin) else {
            throw PythonException.runtimeError("celery.chunks could not build its group")
        }
        try await worker.publish(expansion.tasks, taskID: context.id, chordSizes: expansion.chordSizes)
        return expansion.child
    }
}
