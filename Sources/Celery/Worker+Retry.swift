import CeleryProtocol
import CeleryRedis
import JSON

extension Worker {
    /// Celery's retry: publish the next attempt (same id, retries + 1, its ETA, the same canvas), store RETRY.
    /// Past `maxRetries` the task fails instead. The caller acks this attempt as usual.
    package func retry(_ message: TaskMessage, _ request: TaskRetry, ignoreResult: Bool) async {
        let cause = request.cause.map(StoredException.init)
        if let limit = request.maxRetries, message.retries >= limit {
            let failure =
                cause
                ?? StoredException(
                    type: "MaxRetriesExceededError",
                    module: "celery.exceptions",
                    arguments: [
                        .string("Can't retry \(message.taskName)[\(message.id)]: max retries (\(limit)) exceeded")
                    ]
                )
            logger.error(
                "task failed after \(message.retries) retries: \(failure.repr)",
                metadata: ["celery.task.id": "\(message.id)", "celery.task.name": "\(message.taskName)"]
            )
            await publishErrbacks(of: message)
            noteFailed(message, failure)
            await storeFailure(failure, message, ignoreResult: ignoreResult)
            return
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
            args: message.args,
            kwargs: message.kwargs,
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
        next.callbacks = message.embed["callbacks"]?.arrayValue
        next.errbacks = message.embed["errbacks"]?.arrayValue
        next.chain = message.embed["chain"]?.arrayValue
        if let chord = message.embed["chord"], !chord.isNull { next.chord = chord }
        do {
            try await publish([next], for: message)
        } catch {
            logger.error(
                "cannot publish the retry; storing FAILURE",
                metadata: ["celery.task.id": "\(message.id)", "error": "\(error)"]
            )
            noteFailed(message, cause ?? StoredException(error))
            await storeFailure(cause ?? StoredException(error), message, ignoreResult: ignoreResult)
            return
        }
        noteRetried(message, cause)
        logger.info(
            "task retry scheduled",
            metadata: [
                "celery.task.id": "\(message.id)", "celery.task.name": "\(message.taskName)",
                "celery.task.retries": "\(next.retries)", "celery.task.eta": "\(eta.iso8601)",
            ]
        )
        if !ignoreResult {
            let stored =
                cause
                ?? StoredException(
                    type: "Retry",
                    module: "celery.exceptions",
                    arguments: [.string("Retry in \(delay)")]
                )
            batcher.storeResult(
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
}
