import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import Redis

/// Chords on the Redis result backend with Celery 5.7's semantics (docs/protocol.md §3.5): every terminal outcome of a
/// header task (SUCCESS, FAILURE, REVOKED) returns its part; the worker whose part completes the chord claims it
/// atomically and alone sends the callback with the results in header order, or stores a ChordError for the
/// callback when a header part failed.
extension Worker {
    /// A header task's place in its chord: what `embed.chord` (or a chain element's `options.chord`) says.
    package struct ChordMembership: Sendable {
        package var taskID: String
        package var groupID: String
        package var groupIndex: Int?
        /// The callback signature.
        package var callback: JSONValue
        /// The header task, as publisher of the callback.
        package var origin: FollowUpOrigin

        package init?(_ message: TaskMessage, origin: FollowUpOrigin) {
            guard let groupID = message.groupID, !groupID.isEmpty, let callback = message.embed["chord"],
                case .object = callback
            else { return nil }
            self.taskID = message.id
            self.groupID = groupID
            self.groupIndex = message.headers["group_index"]?.intValue
            self.callback = callback
            self.origin = origin
        }

        package init?(chainElement signature: JSONValue, origin: FollowUpOrigin) {
            let options = signature["options"]
            guard let taskID = options?["task_id"]?.stringValue, let groupID = options?["group_id"]?.stringValue,
                let callback = options?["chord"], case .object = callback
            else { return nil }
            self.taskID = taskID
            self.groupID = groupID
            self.groupIndex = options?["group_index"]?.intValue
            self.callback = callback
            self.origin = FollowUpOrigin(parentID: taskID, rootID: origin.rootID, queue: origin.queue)
        }
    }

    /// Stores a task's outcome: `meta` (nil when results are ignored) through the batcher, or, for a chord header,
    /// together with its chord part in one atomic step, followed by the callback when this part completes the chord.
    package func storeOutcome(_ state: TaskState, result: JSONValue, meta: JSONValue?, of message: TaskMessage) async {
        guard let membership = ChordMembership(message, origin: origin(of: message)) else {
            if let meta { results.storeResult(taskID: message.id, meta: meta) }
            return
        }
        await returnChordPart(membership, state: state, result: result, meta: meta)
    }

    /// The part-return step, then the callback (or the chord's error) if this worker claimed the chord.
    package func returnChordPart(
        _ membership: ChordMembership,
        state: TaskState,
        result: JSONValue,
        meta: JSONValue?
    ) async {
        var logger = self.logger
        logger[metadataKey: "celery.task.id"] = "\(membership.taskID)"
        logger[metadataKey: "celery.group.id"] = "\(membership.groupID)"
        let chord = RedisChord(groupID: membership.groupID)
        let token = OutgoingTask.newID().filter { $0 != "-" }
        let stored = meta.map {
            (
                key: ResultBackend.keyPrefix + membership.taskID,
                payload: WriteBatcher.payload(taskID: membership.taskID, meta: $0)
            )
        }
        let answer: RedisChord.PartReturn
        do {
            answer = try await RedisBackoff(initial: .milliseconds(100), maximum: .seconds(1)).retry(
                maximumAttempts: 10,
                onFailure: { error, _, delay in
                    logger.warning(
                        "cannot return a chord part yet, retrying",
                        metadata: ["error": "\(error)", "retry.in": "\(delay)"]
                    )
                },
                operation: { () throws(RedisError) -> RedisChord.PartReturn in
                    try await chord.returnPart(
                        on: backendClient,
                        taskID: membership.taskID,
                        groupIndex: membership.groupIndex,
                        part: RedisChord.part(taskID: membership.taskID, state: state, result: result),
                        fallbackSize: membership.callback["chord_size"]?.intValue,
                        meta: stored,
                        metaTTL: results.resultTTL,
                        chordTTL: results.resultTTL,
                        token: token
                    )
                }
            )
        } catch {
            logger.error(
                "cannot return the chord part; the chord's callback will not be sent",
                metadata: ["error": "\(error)"]
            )
            if let meta { results.storeResult(taskID: membership.taskID, meta: meta) }
            return
        }
        logger.debug(
            "chord part returned",
            metadata: [
                "celery.chord.ready": "\(answer.ready)",
                "celery.chord.size": "\(answer.expected.map(String.init) ?? "?")",
                "celery.chord.claimed": "\(answer.claimed)",
            ]
        )
        guard answer.claimed else { return }
        do {
            try await completeChord(chord, membership, token: token, logger: logger)
        } catch {
            logger.error("cannot complete the chord", metadata: ["error": "\(error)"])
        }
    }

    /// Run by the one worker that claimed the chord: join the parts, then publish the callback or fail it.
    private func completeChord(
        _ chord: RedisChord,
        _ membership: ChordMembership,
        token: String,
        logger: Logger
    ) async throws(RedisError) {
        let callback = membership.callback
        let callbackID = callback["options"]?["task_id"]?.stringValue ?? OutgoingTask.newID()
        if let saved = try await chord.savedGroup(on: backendClient), ChordJoin.hasNestedGroups(saved) {
            let error = ChordJoin.chordError(
                "Join error: chord headers with nested groups are not supported by swift-celery"
            )
            await failChord(chord, membership, callbackID: callbackID, error: error, logger: logger)
            return
        }
        let results: [JSONValue]
        switch ChordJoin.results(try await chord.parts(on: backendClient)) {
        case .failure(let error):
            await failChord(chord, membership, callbackID: callbackID, error: error, logger: logger)
            return
        case .success(let joined):
            results = joined
        }
        guard try await chord.extendClaim(on: backendClient, token: token) else {
            logger.warning("chord callback not sent: the claim was lost to another worker")
            return
        }
        guard var expansion = expand(callback, prepending: .array(results), from: membership.origin),
            !expansion.tasks.isEmpty
        else {
            let error = ChordJoin.chordError("Callback error: the chord callback cannot be published")
            await failChord(chord, membership, callbackID: callbackID, error: error, logger: logger)
            return
        }
        if (callback["subtask_type"]?.stringValue ?? "").isEmpty { expansion.tasks[0].id = callbackID }
        do {
            try await publish(expansion.tasks, taskID: membership.taskID, chordSizes: expansion.chordSizes)
            logger.debug("chord callback sent", metadata: ["celery.chord.callback": "\(callbackID)"])
        } catch {
            let failure = ChordJoin.chordError("Callback error: \(error)")
            await failChord(chord, membership, callbackID: callbackID, error: failure, logger: logger)
        }
        if try await !chord.cleanUp(on: backendClient, token: token) {
            logger.warning("the chord claim lapsed before cleanup; its keys are left to expire")
        }
    }

    /// Stores the chord's error as the callback's FAILURE, sends the callback's errbacks, and drops the size so a
    /// late copy of a header task does not fail the chord again.
    private func failChord(
        _ chord: RedisChord,
        _ membership: ChordMembership,
        callbackID: String,
        error: StoredException,
        logger: Logger
    ) async {
        logger.error("chord failed: \(error.repr)", metadata: ["celery.chord.callback": "\(callbackID)"])
        let callbackName = membership.callback["task"]?.stringValue ?? "?"
        let errbacks = Self.signatures(membership.callback["options"]?["link_error"])
        if membership.callback["subtask_type"]?.stringValue == "group" {
            // Celery's _handle_group_chord_error: each task of a group body fails with the chord's error and
            // calls its own errbacks, then the group's run once (#8786: the body's results would hang otherwise).
            await failGroupBody(membership.callback, error: error, from: membership.origin)
        }
        // Celery's chord_error_from_stack: new-style errbacks get a request made from the callback's signature.
        var request = membership.callback.objectValue ?? [:]
        request["id"] = .string(callbackID)
        request["errbacks"] = .array(errbacks)
        request["delivery_info"] = [:]
        let sent = await runErrbacks(
            errbacks,
            request: request,
            error: error,
            traceback: nil,
            failedTaskID: callbackID,
            from: membership.origin
        )
        // Stored after the errbacks, with the group they were sent as for its child (Celery stores the body's
        // failure after calling them, and its meta lists them).
        results.storeResult(
            taskID: callbackID,
            meta: backend.meta(
                state: .failure,
                result: error.resultJSON,
                traceback: error.traceback(taskName: callbackName, hostname: configuration.hostname),
                message: nil,
                taskID: callbackID,
                children: sent.map { .array([$0]) } ?? .array([])
            )
        )
        // The chain after the body fails too, so a group waiting on the chain's last result finishes.
        await failChain(
            membership.callback["options"]?["chain"]?.arrayValue ?? [],
            from: membership.origin,
            error: error,
            traceback: nil
        )
        do {
            try await chord.dropSize(on: backendClient)
        } catch {
            logger.warning("cannot drop the failed chord's size", metadata: ["error": "\(error)"])
        }
    }

    /// Celery's `_fail_chain`: every task still to come in a failed task's chain is stored with the same failure
    /// (so waiting on the chain's last result raises instead of hanging), and an element that belongs to a chord
    /// returns its part so the chord does not wait forever.
    package func failChain(of message: TaskMessage, error: StoredException, traceback: String?) async {
        await failChain(
            message.embed["chain"]?.arrayValue ?? [],
            from: origin(of: message),
            error: error,
            traceback: traceback
        )
    }

    /// `_fail_chain` over the chain elements still to come (reversed, next last, as on the wire).
    package func failChain(
        _ elements: [JSONValue],
        from origin: FollowUpOrigin,
        error: StoredException,
        traceback: String?
    ) async {
        for var element in elements {
            // A chord later in the chain gives its result through its body: the body is what fails.
            while element["subtask_type"]?.stringValue == "chord", let body = element["kwargs"]?["body"] {
                element = body
            }
            let options = element["options"]
            guard let taskID = options?["task_id"]?.stringValue else { continue }
            var meta = backend.meta(
                state: .failure,
                result: error.resultJSON,
                traceback: traceback,
                message: nil,
                taskID: taskID
            )
            if let groupID = options?["group_id"]?.stringValue, case .object(var object) = meta {
                object.removeValue(forKey: "task_id")
                object["group_id"] = .string(groupID)
                object["task_id"] = .string(taskID)
                meta = .object(object)
            }
            if let membership = ChordMembership(chainElement: element, origin: origin) {
                await returnChordPart(membership, state: .failure, result: error.resultJSON, meta: meta)
            } else {
                results.storeResult(taskID: taskID, meta: meta)
            }
        }
    }

    /// Stores the chord's error for each task of a group body that has an id, and calls each one's errbacks.
    private func failGroupBody(_ group: JSONValue, error: StoredException, from origin: FollowUpOrigin) async {
        for member in Self.signatures(group["kwargs"]?["tasks"]) {
            guard let memberID = member["options"]?["task_id"]?.stringValue else { continue }
            results.storeResult(
                taskID: memberID,
                meta: backend.meta(
                    state: .failure,
                    result: error.resultJSON,
                    traceback: nil,
                    message: nil,
                    taskID: memberID
                )
            )
            var request = member.objectValue ?? [:]
            request["id"] = .string(memberID)
            await runErrbacks(
                Self.signatures(member["options"]?["link_error"]),
                request: request,
                error: error,
                traceback: nil,
                failedTaskID: memberID,
                from: origin
            )
        }
    }
}
