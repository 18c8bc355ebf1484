import JSON
import Logging
import RESP
import Redis

/// Canvas follow-ups (PROTOCOL §2.6): link callbacks and the next chain hop after a success, errbacks after a
/// failure. Chords (`embed.chord`) are not handled yet (TODO: the chord issue, PROTOCOL §3.5); a chord header
/// task runs and stores its result, and the chord callback is not triggered.
extension Worker {
    /// Publishes the link callbacks and the next chain hop of a task that succeeded with `result`, and returns
    /// the `children` for its result meta (`[[[child_id, null], null], ...]`). Several callbacks are published as
    /// separate tasks, each its own child (Python sends them as one group, recorded as a single GroupResult child).
    ///
    /// Called before the result is stored and before the ack (Celery's order: callbacks are applied before
    /// `mark_as_done`, so `result.children` is populated). Throws when Redis refused the publish even after
    /// retries; the caller stores the task as failed then (Python only logs such an error and leaves the task
    /// PENDING forever; a FAILURE at least wakes a waiting client).
    func publishSuccessors(of message: TaskMessage, result: JSONValue) async throws(RedisError) -> JSONValue {
        var followUps: [OutgoingTask] = []
        for signature in message.embed["callbacks"]?.arrayValue ?? [] {
            if let task = followUp(signature, prepending: result, after: message) { followUps.append(task) }
        }
        if var chain = message.embed["chain"]?.arrayValue, let next = chain.popLast() {
            if var task = followUp(next, prepending: result, after: message) {
                task.chain = chain.isEmpty ? nil : chain
                followUps.append(task)
            }
        }
        try await publish(followUps, for: message)
        return .array(followUps.map { [[.string($0.id), .null], .null] })
    }

    /// Publishes the errbacks of a failed task with its id prepended (unless immutable). Python runs errbacks
    /// taking more than one argument inline; a Swift worker cannot, so every errback is published as a task.
    /// Chain hops after a failure are not run. A publish that fails even after retries is logged and dropped:
    /// the task's FAILURE is still stored.
    func publishErrbacks(of message: TaskMessage) async {
        let errbacks = (message.embed["errbacks"]?.arrayValue ?? []).compactMap {
            followUp($0, prepending: .string(message.id), after: message)
        }
        do {
            try await publish(errbacks, for: message)
        } catch {
            logger.error(
                "cannot publish the errbacks of a failed task",
                metadata: ["celery.task.id": "\(message.id)", "error": "\(error)"]
            )
        }
    }

    /// The message for signature `{"task", "args", "kwargs", "options", "subtask_type", "immutable"}` called
    /// after `parent` with `argument` prepended (unless immutable); nil for a signature without a task name.
    func followUp(_ signature: JSONValue, prepending argument: JSONValue, after parent: TaskMessage) -> OutgoingTask? {
        guard let name = signature["task"]?.stringValue, !name.isEmpty else {
            logger.warning("ignoring a canvas signature without a task name", metadata: ["signature": "\(signature)"])
            return nil
        }
        let options = signature["options"]?.objectValue ?? [:]
        var args = signature["args"]?.arrayValue ?? []
        if signature["immutable"]?.boolValue != true { args.insert(argument, at: 0) }
        // Python would route by the task's default route; staying on the queue the parent came from keeps the
        // hop on a queue this worker consumes.
        let queue =
            options["queue"]?.stringValue ?? options["queue"]?["name"]?.stringValue
            ?? options["routing_key"]?.stringValue
            ?? (parent.routingKey.isEmpty ? configuration.queues.first ?? "celery" : parent.routingKey)
        var task = OutgoingTask(
            name: name,
            id: options["task_id"]?.stringValue ?? OutgoingTask.newID(),
            args: args,
            kwargs: signature["kwargs"]?.objectValue ?? [:],
            queue: queue,
            priority: options["priority"]?.intValue ?? 0,
            origin: configuration.hostname
        )
        task.parentID = parent.id
        task.rootID = parent.rootID ?? parent.id
        task.replyTo = options["reply_to"]?.stringValue ?? ""
        task.shadow = options["shadow"]?.stringValue
        task.groupID = options["group_id"]?.stringValue
        task.groupIndex = options["group_index"]?.intValue
        task.hardTimeLimit = options["time_limit"]?.doubleValue
        task.softTimeLimit = options["soft_time_limit"]?.doubleValue
        let now = CeleryTimestamp.now()
        if let countdown = options["countdown"]?.doubleValue {
            task.eta = CeleryTimestamp(secondsSince1970: now.secondsSince1970 + countdown)
        } else if let eta = options["eta"]?.stringValue {
            task.eta = CeleryTimestamp(iso8601: eta)
        }
        if let seconds = options["expires"]?.doubleValue {
            task.expires = CeleryTimestamp(secondsSince1970: now.secondsSince1970 + seconds)
        } else if let expires = options["expires"]?.stringValue {
            task.expires = CeleryTimestamp(iso8601: expires)
        }
        // `sig.set(link=..., link_error=...)`: one signature or a list of them.
        func signatures(_ value: JSONValue?) -> [JSONValue]? {
            switch value {
            case .array(let items)?: return items.isEmpty ? nil : items
            case .object(let members)?: return [.object(members)]
            default: return nil
            }
        }
        task.callbacks = signatures(options["link"])
        task.errbacks = signatures(options["link_error"])
        // TODO(chord issue): pass `options.chord` on when chords are supported.
        return task
    }

    /// LPUSHes the follow-ups in one MULTI/EXEC (all or none), retrying with backoff for about 3 s.
    func publish(_ tasks: [OutgoingTask], for message: TaskMessage) async throws(RedisError) {
        guard !tasks.isEmpty else { return }
        let commands = tasks.map { RESPCommand("LPUSH", $0.list, RESPBytes($0.envelope())) }
        let backoff = RedisBackoff(initial: .milliseconds(100), maximum: .seconds(1))
        try await backoff.retry(
            maximumAttempts: 6,
            onFailure: { error, _, delay in
                logger.warning(
                    "cannot publish follow-up tasks, retrying",
                    metadata: ["celery.task.id": "\(message.id)", "error": "\(error)", "retry.in": "\(delay)"]
                )
            },
            operation: { () throws(RedisError) in
                for reply in try await brokerClient.transaction(commands) { _ = try reply.get() }
            }
        )
    }
}
