import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import RESP
import Redis

/// Canvas follow-ups (docs/protocol.md §2.6): link callbacks and the next chain hop after a success, errbacks and the
/// failure of the rest of the chain after a failure. Chord part-returns are in Worker+Chord.swift.
extension Worker {
    /// Where follow-up tasks come from: the task that publishes them and the queue they fall back to.
    package struct FollowUpOrigin: Sendable {
        package var parentID: String
        package var rootID: String
        package var queue: String
    }

    package func origin(of message: TaskMessage) -> FollowUpOrigin {
        FollowUpOrigin(
            parentID: message.id,
            rootID: message.rootID ?? message.id,
            queue: message.routingKey.isEmpty ? configuration.queues.first ?? "celery" : message.routingKey
        )
    }

    /// Publishes the link callbacks and the next chain hop of a task that succeeded with `result`, and returns
    /// the `children` for its result meta. One callback is one child `[[id, null], null]`; several are sent as
    /// one group (new group id, `group_index` 0...n-1), recorded as a single GroupResult child
    /// `[[gid, null], [[[id, null], null], ...]]`, as Celery does. The chain hop comes after them.
    ///
    /// Called before the result is stored and before the ack (Celery's order: callbacks are applied before
    /// `mark_as_done`, so `result.children` is populated). Throws when Redis refused the publish even after
    /// retries; the caller stores the task as failed then (Python only logs such an error and leaves the task
    /// PENDING forever; a FAILURE at least wakes a waiting client).
    package func publishSuccessors(of message: TaskMessage, result: JSONValue) async throws(RedisError) -> JSONValue {
        let origin = origin(of: message)
        var followUps: [OutgoingTask] = []
        var children: [JSONValue] = []
        var chordSizes: [ChordSize] = []
        // Plain callbacks: one is one child; several go out as one group. Group and chord callbacks go out as
        // themselves (Celery's _dispatch_callbacks_and_chain).
        var plain: [OutgoingTask] = []
        for signature in message.embed["callbacks"]?.arrayValue ?? [] {
            guard let expansion = expand(signature, prepending: result, from: origin) else { continue }
            if Self.isTaskSignature(signature) {
                plain += expansion.tasks
            } else {
                followUps += expansion.tasks
                children.append(expansion.child)
                chordSizes += expansion.chordSizes
            }
        }
        if plain.count == 1 {
            followUps.append(plain[0])
            children.append([[.string(plain[0].id), .null], .null])
        } else if plain.count > 1 {
            let group = Self.asGroup(plain)
            followUps += group.tasks
            children.append(group.child)
        }
        if var chain = message.embed["chain"]?.arrayValue, let next = chain.popLast(),
            let expansion = expand(next, prepending: result, from: origin, rest: chain)
        {
            followUps += expansion.tasks
            children.append(expansion.child)
            chordSizes += expansion.chordSizes
        }
        try await publish(followUps, taskID: message.id, chordSizes: chordSizes)
        return .array(children)
    }

    /// The tasks as one group: a fresh group id and `group_index` 0...n-1, and the GroupResult tuple for `children`.
    package static func asGroup(_ tasks: [OutgoingTask]) -> (tasks: [OutgoingTask], child: JSONValue) {
        let groupID = OutgoingTask.newID()
        var members = tasks
        for index in members.indices {
            members[index].groupID = groupID
            members[index].groupIndex = index
        }
        let child: JSONValue = [
            [.string(groupID), .null], .array(members.map { [[.string($0.id), .null], .null] }),
        ]
        return (members, child)
    }

    /// Publishes errbacks of a failed task with its id prepended (unless immutable), as one group with
    /// `parent_id` = the failed task, as Celery does (new-style errbacks run in place: Worker+Errbacks.swift). A
    /// publish that fails even after retries is logged and dropped: the task's FAILURE is still stored.
    /// Returns the group's child tuple, nil when nothing was sent.
    @discardableResult
    package func publishErrbacks(
        _ signatures: [JSONValue],
        failedTaskID: String,
        from origin: FollowUpOrigin
    ) async -> JSONValue? {
        var origin = origin
        origin.parentID = failedTaskID
        let errbacks = signatures.compactMap { followUp($0, prepending: .string(failedTaskID), from: origin) }
        guard !errbacks.isEmpty else { return nil }
        let group = Self.asGroup(errbacks)
        do {
            try await publish(group.tasks, taskID: failedTaskID)
            return group.child
        } catch {
            logger.error(
                "cannot publish the errbacks of a failed task",
                metadata: ["celery.task.id": "\(failedTaskID)", "error": "\(error)"]
            )
            return nil
        }
    }

    /// The message for signature `{"task", "args", "kwargs", "options", "subtask_type", "immutable"}` called
    /// after `parent` with `argument` prepended (unless immutable); nil for a signature without a task name.
    package func followUp(
        _ signature: JSONValue,
        prepending argument: JSONValue,
        after parent: TaskMessage
    ) -> OutgoingTask? {
        followUp(signature, prepending: argument, from: origin(of: parent))
    }

    /// The message for a task signature published by `origin`, with `argument` prepended (unless immutable or
    /// nil). Group, chord and chain signatures go through `expand` (Worker+NestedCanvas.swift).
    package func followUp(
        _ signature: JSONValue,
        prepending argument: JSONValue?,
        from origin: FollowUpOrigin
    ) -> OutgoingTask? {
        if !Self.isTaskSignature(signature), let kind = signature["subtask_type"]?.stringValue {
            logger.error(
                "cannot publish a nested \(kind) signature here; only task signatures are supported as errbacks",
                metadata: ["celery.task.id": "\(origin.parentID)", "signature": "\(signature)"]
            )
            return nil
        }
        guard let name = signature["task"]?.stringValue, !name.isEmpty else {
            logger.warning("ignoring a canvas signature without a task name", metadata: ["signature": "\(signature)"])
            return nil
        }
        let options = signature["options"]?.objectValue ?? [:]
        var args = signature["args"]?.arrayValue ?? []
        if let argument, signature["immutable"]?.boolValue != true { args.insert(argument, at: 0) }
        // Python would route by the task's default route; staying on the queue the parent came from keeps the
        // hop on a queue this worker consumes.
        let queue =
            options["queue"]?.stringValue ?? options["queue"]?["name"]?.stringValue
            ?? options["routing_key"]?.stringValue
            ?? origin.queue
        var task = OutgoingTask(
            name: name,
            id: options["task_id"]?.stringValue ?? OutgoingTask.newID(),
            args: args,
            kwargs: signature["kwargs"]?.objectValue ?? [:],
            queue: queue,
            priority: options["priority"]?.intValue ?? 0,
            origin: configuration.hostname
        )
        task.parentID = origin.parentID
        task.rootID = origin.rootID
        task.replyTo = options["reply_to"]?.stringValue ?? ""
        task.shadow = options["shadow"]?.stringValue
        task.groupID = options["group_id"]?.stringValue
        task.groupIndex = options["group_index"]?.intValue
        task.hardTimeLimit = options["time_limit"]?.doubleValue
        task.softTimeLimit = options["soft_time_limit"]?.doubleValue
        task.replacedTaskNesting = options["replaced_task_nesting"]?.intValue ?? 0
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
        // Stamps a visitor put on the signature (`sig.stamp(...)`) go with its message, where a revoke by stamp
        // finds them.
        if case .array(let stamped)? = options["stamped_headers"], !stamped.isEmpty {
            task.headers["stamped_headers"] = .array(stamped)
            var stamps: JSONObject = [:]
            for case .string(let header) in stamped { stamps[header] = options[header] ?? .null }
            task.headers["stamps"] = .object(stamps)
        }
        // A chain inside a chord header: its last task carries the chord callback.
        if let chord = options["chord"], case .object = chord { task.chord = chord }
        // A chord body that a chain continues after.
        if let chain = options["chain"]?.arrayValue, !chain.isEmpty { task.chain = chain }
        return task
    }

    /// LPUSHes the follow-ups in one MULTI/EXEC (all or none), retrying with backoff for about 3 s.
    package func publish(_ tasks: [OutgoingTask], for message: TaskMessage) async throws(RedisError) {
        try await publish(tasks, taskID: message.id)
    }

    package func publish(_ tasks: [OutgoingTask], taskID: String, chordSizes: [ChordSize] = []) async throws(RedisError)
    {
        guard !tasks.isEmpty else { return }
        let backoff = RedisBackoff(initial: .milliseconds(100), maximum: .seconds(1))
        try await backoff.retry(
            maximumAttempts: 6,
            onFailure: { error, _, delay in
                logger.warning(
                    "cannot publish follow-up tasks, retrying",
                    metadata: ["celery.task.id": "\(taskID)", "error": "\(error)", "retry.in": "\(delay)"]
                )
            },
            operation: { () throws(RedisError) in
                try await storeChordSizes(chordSizes)
                try await publisher.publish(tasks)
            }
        )
    }
}
