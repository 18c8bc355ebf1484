import CeleryProtocol
import CeleryRedis
import JSON

extension Worker {
    /// Celery's retry: publishes the next attempt (same id, retries + 1, its ETA, the same canvas, the message's
    /// custom headers, the request's `args`/`kwargs` when given) and answers
    /// `.retried`; past `maxRetries`, or when the next attempt cannot be published, the task fails instead. The
    /// recorder stores RETRY (`storeRetry`) and acks this attempt as usual.
    package func publishRetry(of message: TaskMessage, _ request: TaskRetry) async -> TaskOutcome {
        let cause = request.cause.map(StoredException.init)
        let (args, kwargs) = TaskMessage.retryArguments(
            request,
            given: (message.args, message.kwargs),
            parameters: registry[message.taskName]?.parameters ?? []
        )
        if let limit = request.maxRetries, message.retries >= limit {
            let failure =
                cause
                ?? StoredException(
                    type: "MaxRetriesExceededError",
                    module: "celery.exceptions",
                    arguments: [
                        // Celery's wording, with the arguments the next attempt would have had.
                        .string(
                            "Can't retry \(message.taskName)[\(message.id)] args:\(PythonRepr.arguments(args)) "
                                + "kwargs:\(PythonRepr.render(.object(kwargs)))"
                        )
                    ]
                )
            logger.error(
                "task failed after \(message.retries) retries: \(failure.repr)",
                metadata: ["celery.task.id": "\(message.id)", "celery.task.name": "\(message.taskName)"]
            )
            return .failed(failure, errbacks: true)
        }
        let now = CeleryTimestamp.now()
        let delay = request.countdown ?? .seconds(180)
        let eta =
            request.eta
            ?? CeleryTimestamp(
                secondsSince1970: now.secondsSince1970 + Double(delay.components.seconds)
                    + Double(delay.components.attoseconds) / 1e18
            )
        var next = OutgoingTask(
            name: message.taskName,
            id: message.id,
            args: args,
            kwargs: kwargs,
            queue: message.routingKey.isEmpty ? configuration.queues.first ?? "celery" : message.routingKey,
            priority: message.priority,
            origin: configuration.hostname
        )
        next.retries = message.retries + 1
        next.eta = eta
        next.expires = message.expires
        next.parentID = message.id
        next.rootID = message.rootID ?? message.id
        next.groupID = message.groupID
        next.groupIndex = message.headers["group_index"]?.intValue
        next.shadow = message.headers["shadow"]?.stringValue
        (next.hardTimeLimit, next.softTimeLimit) = message.timeLimit
        next.ignoreResult = message.ignoreResult
        next.replacedTaskNesting = message.headers["replaced_task_nesting"]?.intValue ?? 0
        next.callbacks = message.embed["callbacks"]?.arrayValue
        next.errbacks = message.embed["errbacks"]?.arrayValue
        next.chain = message.embed["chain"]?.arrayValue
        if let chord = message.embed["chord"], !chord.isNull { next.chord = chord }
        next.headers = message.customHeaders
        do {
            try await publish([next], for: message)
        } catch {
            logger.error(
                "cannot publish the retry; storing FAILURE",
                metadata: ["celery.task.id": "\(message.id)", "error": "\(error)"]
            )
            return .failed(cause ?? StoredException(error), errbacks: false)
        }
        logger.info(
            "task retry scheduled",
            metadata: [
                "celery.task.id": "\(message.id)", "celery.task.name": "\(message.taskName)",
                "celery.task.retries": "\(next.retries)", "celery.task.eta": "\(eta.iso8601)",
            ]
        )
        return .retried(request, eta: eta)
    }

    /// Stores RETRY with the request's cause (or Celery's `Retry` exception) for the attempt that asked to retry.
    package func storeRetry(of message: TaskMessage, _ request: TaskRetry, eta: CeleryTimestamp) {
        let delay = request.countdown ?? .seconds(180)
        let stored =
            request.cause.map(StoredException.init)
            ?? StoredException(
                type: "Retry",
                module: "celery.exceptions",
                arguments: [.string("Retry in \(delay)")]
            )
        results.storeResult(
            taskID: message.id,
            meta: backend.meta(
                state: .retry,
                result: stored.resultJSON,
                traceback: "celery.exceptions.Retry: Retry at \(eta.iso8601): \(stored.repr)\n",
                message: message,
                taskID: message.id
            )
        )
    }
}

extension TaskMessage {
    /// The headers Celery's request context does not know (`Context._get_custom_headers`), which its retry
    /// re-sends through `apply_async(headers=...)`: Celery's own keys and RabbitMQ's dead-letter marks are left
    /// out. kombu's `redelivered` mark is left out too: Python carries it along, but the retry is a new message
    /// that was never restored, and this worker reads that mark as one.
    package var customHeaders: JSONObject {
        headers.filter { !Self.celeryHeaderKeys.contains($0.key) }
    }

    /// `Context`'s attributes in Celery 5.7, the keys `_get_custom_headers` drops, and the `x-death` headers.
    private static let celeryHeaderKeys: Set<String> = [
        "args", "callbacks", "called_directly", "chain", "chord", "correlation_id", "delivery_info", "errbacks",
        "eta", "expires", "group", "group_index", "headers", "hostname", "id", "ignore_result", "is_eager",
        "kwargs", "logfile", "loglevel", "origin", "parent_id", "properties", "replaced_task_nesting", "reply_to",
        "retries", "root_id", "shadow", "soft_time_limit", "stamped_headers", "stamps", "taskset", "time_limit",
        "timelimit", "utc",
        "lang", "task", "argsrepr", "kwargsrepr", "compression",
        "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
        "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason",
        "redelivered",
    ]

    /// The next attempt's arguments (Celery 5.7's `Task.retry`, #6494): new `args` alone drop the message's kwargs
    /// that name the parameters those args now fill; new `kwargs` alone replace the message's positional values of
    /// the parameters they name, which stay positional. Needs the handler's parameter names; without them, or
    /// with both or neither given, the given ones replace the message's as they are.
    package static func retryArguments(
        _ request: TaskRetry,
        given message: (args: [JSONValue], kwargs: JSONObject),
        parameters: [String]
    ) -> (args: [JSONValue], kwargs: JSONObject) {
        switch (request.args, request.kwargs) {
        case (let args?, nil) where !message.kwargs.isEmpty && !parameters.isEmpty:
            var kwargs = message.kwargs
            for name in parameters.prefix(args.count) { kwargs.removeValue(forKey: name) }
            return (args, kwargs)
        case (nil, let newKwargs?) where !message.args.isEmpty && !parameters.isEmpty:
            guard message.args.count <= parameters.count else { return (message.args, newKwargs) }
            var args = message.args
            var kwargs = newKwargs
            for (index, name) in parameters.prefix(args.count).enumerated() {
                if let value = kwargs.removeValue(forKey: name) { args[index] = value }
            }
            return (args, kwargs)
        default:
            return (request.args ?? message.args, request.kwargs ?? message.kwargs)
        }
    }
}
