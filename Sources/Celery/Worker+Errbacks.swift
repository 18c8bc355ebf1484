import CeleryProtocol
import JSON

/// Errbacks, as Celery runs them (celery/backends/base.py `_call_task_errbacks`, docs/protocol.md §2.6): an errback
/// whose function takes more than one argument beyond those its signature stores is a new-style errback, called
/// right away in the worker where the task failed with `(request, exc, traceback)`; any other is sent as a task
/// with the failed task's id prepended. A new-style errback this worker does not run is sent as a task too.
extension Worker {
    /// Runs the new-style errbacks among `signatures` here and publishes the rest (one group, parent = the failed
    /// task). `request` is the failed task's request as Python's errback sees it (`request.id`, `request.args`...).
    /// Returns the child (GroupResult tuple) of the errbacks it sent, nil when it sent none.
    @discardableResult
    package func runErrbacks(
        _ signatures: [JSONValue],
        request: JSONObject,
        error: StoredException,
        traceback: String?,
        failedTaskID: String,
        from origin: FollowUpOrigin
    ) async -> JSONValue? {
        var published: [JSONValue] = []
        for signature in signatures {
            guard let task = newStyleErrback(signature) else {
                published.append(signature)
                continue
            }
            let stored = signature["args"]?.arrayValue ?? []
            let immutable = signature["immutable"]?.boolValue == true
            let arguments = TaskArguments(
                args: immutable
                    ? stored
                    : [.object(request), error.resultJSON, traceback.map(JSONValue.string) ?? .null]
                        + stored,
                kwargs: signature["kwargs"]?.objectValue ?? [:]
            )
            var context = TaskContext(
                id: failedTaskID,
                name: task.name,
                retries: request["retries"]?.intValue ?? 0,
                hostname: configuration.hostname,
                deliveryInfo: TaskContext.DeliveryInfo(
                    exchange: "",
                    routingKey: origin.queue,
                    priority: 0,
                    redelivered: false
                ),
                headers: [:],
                logger: logger,
                redis: redisForTasks
            )
            context.worker = self
            do {
                _ = try await task.run(context, arguments)
            } catch {
                // Celery logs it and goes on: the failed task's FAILURE is stored all the same.
                logger.error(
                    "Errback \(task.name) raised an exception",
                    metadata: ["celery.task.id": "\(failedTaskID)", "error": "\(StoredException(error).repr)"]
                )
            }
        }
        return await publishErrbacks(published, failedTaskID: failedTaskID, from: origin)
    }

    /// The registered task `signature` calls if it is a new-style errback: a task signature (not a canvas) whose
    /// handler names more than one parameter not already bound by the signature's stored args and kwargs
    /// (Celery's `arity_greater(partial(fun, *args, **kwargs), 1)`; all of them when immutable). Handlers
    /// registered without parameter names (`*args, **kwargs`) are old-style: they get the failed id.
    package func newStyleErrback(_ signature: JSONValue) -> RegisteredTask? {
        if let kind = signature["subtask_type"]?.stringValue, !kind.isEmpty { return nil }
        guard let name = signature["task"]?.stringValue, let task = registry[name], !task.parameters.isEmpty else {
            return nil
        }
        var remaining = task.parameters.count
        if signature["immutable"]?.boolValue != true {
            let stored = signature["args"]?.arrayValue?.count ?? 0
            remaining -= stored
            for key in signature["kwargs"]?.objectValue?.keys ?? [] {
                if let index = task.parameters.firstIndex(of: key), index >= stored { remaining -= 1 }
            }
        }
        return remaining > 1 ? task : nil
    }

    /// The request a new-style errback gets for a failed `message`: the fields of Celery's task `Context`.
    package func errbackRequest(of message: TaskMessage) -> JSONObject {
        var request: JSONObject = [
            "id": .string(message.id),
            "task": .string(message.taskName),
            "args": .array(message.args),
            "kwargs": .object(message.kwargs),
            "retries": .int(message.retries),
            "hostname": .string(configuration.hostname),
            "delivery_info": [
                "exchange": .string(message.exchange), "routing_key": .string(message.routingKey),
                "priority": .int(message.priority), "redelivered": .bool(message.redelivered),
            ],
        ]
        for key in [
            "root_id", "parent_id", "group", "group_index", "eta", "expires", "origin", "ignore_result",
            "replaced_task_nesting", "stamps", "stamped_headers",
        ] {
            request[key] = message.headers[key] ?? .null
        }
        request["timelimit"] = message.headers["timelimit"] ?? [.null, .null]
        for key in ["callbacks", "errbacks", "chain", "chord"] {
            request[key] = message.embed[key] ?? .null
        }
        return request
    }
}
