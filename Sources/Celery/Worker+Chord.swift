import CeleryClient
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
        /// Whether the part comes from a redelivered message: one that finds the chord done is a late copy.
        package var redelivered: Bool

        package init?(_ message: TaskMessage, origin: FollowUpOrigin) {
            guard let groupID = message.groupID, !groupID.isEmpty, let callback = message.embed["chord"],
                case .object = callback
            else { return nil }
            self.taskID = message.id
            self.groupID = groupID
            self.groupIndex = message.headers["group_index"]?.intValue
            self.callback = callback
            self.origin = origin
            self.redelivered = message.redelivered
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
            // A part returned for a chain element that never ran: a chord already done has no use for it.
            self.redelivered = true
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
        let returnPart = { () async throws(RedisError) -> RedisChord.PartReturn in
            try await RedisBackoff(initial: .milliseconds(100), maximum: .seconds(1)).retry(
                maximumAttempts: 10,
                onFailure: { error, _, delay in
                    logger.warning(
                        "cannot return a chord part yet, retrying",
                        metadata: ["error": "\(error)", "retry.in": "\(delay)"]
                    )
                },
                operation: { () throws(RedisError) -> RedisChord.PartReturn in
                    try await chord.returnPart(
                        on: self.backendClient,
                        taskID: membership.taskID,
                        groupIndex: membership.groupIndex,
                        part: RedisChord.part(taskID: membership.taskID, state: state, result: result),
                        fallbackSize: membership.callback["chord_size"]?.intValue,
                        meta: stored,
                        metaTTL: self.results.resultTTL,
                        chordTTL: self.results.resultTTL,
                        token: token
                    )
                }
            )
        }
        var answer: RedisChord.PartReturn
        do {
            answer = try await returnPart()
            // The chord is marked done. A redelivered part is a late copy of a finished run's; a fresh one may be
            // a first part of a frozen chord applied again, which Celery's client sends before it resets the chord
            // (set_chord_size comes just before the last header task): wait for that reset a moment before
            // dropping the part.
            if answer.ready == -1, !membership.redelivered,
                try await chord.restarts(on: backendClient, within: .seconds(2))
            {
                answer = try await returnPart()
            }
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
        let joined: Result<[JSONValue], StoredException>
        if let saved = try await chord.savedGroup(on: backendClient), ChordJoin.hasNestedGroups(saved) {
            // A header holding groups (a chain ending in a group, a group in the header): the client saved its
            // structure, and the results are joined through it, as Celery's GroupResult.join_native does.
            joined = await joinSaved(saved)
        } else {
            joined = ChordJoin.results(try await chord.parts(on: backendClient))
        }
        let results: [JSONValue]
        switch joined {
        case .failure(let error):
            await failChord(chord, membership, callbackID: callbackID, error: error, logger: logger)
            return
        case .success(let values):
            results = values
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

    /// The results of a saved header, read from the result backend as `AsyncResult.get()` reads a group's; waits up
    /// to Celery's default `result_chord_join_timeout` (3 s) for one that is not stored yet.
    private func joinSaved(_ saved: JSONValue) async -> Result<[JSONValue], StoredException> {
        let ids = AsyncResult.taskIDs(saved["result"] ?? .null)
        let metas: [JSONValue]
        do {
            metas = try await AsyncResult.waitForReady(
                ids.map { AsyncResult(id: $0, backend: backendClient) },
                backend: backendClient,
                timeout: .seconds(3)
            )
        } catch let error as CeleryClientError where error.code == .timeout {
            return .failure(ChordJoin.chordError("Join error: TimeoutError('The operation timed out.')"))
        } catch {
            return .failure(ChordJoin.chordError("Join error: \(error)"))
        }
        let ready = Dictionary(zip(ids, metas)) { first, _ in first }
        return ChordJoin.results(ofSaved: saved, metas: ready)
            ?? .failure(ChordJoin.chordError("Join error: a saved group member has no result"))
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
        if membership.callback["subtask_type"]?.stringValue == "group" {
            // Celery's _handle_group_chord_error: each result of a group body fails with the header's error and
            // calls its own errbacks and the group's; the group's id is failed too.
            await failGroupBody(membership.callback, error: error, from: membership.origin)
            results.storeResult(
                taskID: callbackID,
                meta: backend.meta(
                    state: .failure,
                    result: error.original.resultJSON,
                    traceback: nil,
                    message: nil,
                    taskID: callbackID
                )
            )
        } else {
            // Celery's chord_error_from_stack: new-style errbacks get a request made from the callback's signature.
            let errbacks = Self.signatures(membership.callback["options"]?["link_error"])
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
                    traceback: error.traceback(
                        taskName: membership.callback["task"]?.stringValue ?? "?",
                        hostname: configuration.hostname
                    ),
                    message: nil,
                    taskID: callbackID,
                    children: sent.map { .array([$0]) } ?? .array([])
                )
            )
        }
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

    /// Celery's `_handle_group_chord_error`: each result of a group body (a task's, a chain's last task's, a chord's
    /// body's, a nested group's) is stored as failed with the error that failed the chord, after calling its
    /// errbacks and the group's own, each once (#8786: the body's results would hang otherwise).
    private func failGroupBody(_ group: JSONValue, error: StoredException, from origin: FollowUpOrigin) async {
        let error = error.original
        let groupErrbacks = Self.signatures(group["options"]?["link_error"])
        for member in Self.signatures(group["kwargs"]?["tasks"]) {
            let (resultID, ownErrbacks) = Self.resultErrbacks(of: member)
            guard let resultID else { continue }
            var errbacks: [JSONValue] = []
            for errback in ownErrbacks + groupErrbacks where !errbacks.contains(errback) { errbacks.append(errback) }
            await runErrbacks(
                errbacks,
                request: [
                    "id": .string(resultID), "errbacks": .array(errbacks), "delivery_info": [:],
                    "task": member["task"] ?? "unknown",
                ],
                error: error,
                traceback: nil,
                failedTaskID: resultID,
                from: origin
            )
            results.storeResult(
                taskID: resultID,
                meta: backend.meta(
                    state: .failure,
                    result: error.resultJSON,
                    traceback: nil,
                    message: nil,
                    taskID: resultID
                )
            )
        }
    }

    /// Celery's `_result_errbacks`: the id of the result a signature gives and the errbacks linked to it. A chord's
    /// result is its body's, with the chord's own errbacks; a group's collects its tasks' errbacks with its own; a
    /// chain gives its last task's result, with its own errbacks.
    package static func resultErrbacks(of signature: JSONValue) -> (id: String?, errbacks: [JSONValue]) {
        var signature = signature
        var errbacks: [JSONValue] = []
        while signature["subtask_type"]?.stringValue == "chord", let body = signature["kwargs"]?["body"] {
            errbacks += signatures(signature["options"]?["link_error"])
            signature = body
        }
        errbacks += signatures(signature["options"]?["link_error"])
        switch signature["subtask_type"]?.stringValue {
        case "group":
            for task in signatures(signature["kwargs"]?["tasks"]) { errbacks += resultErrbacks(of: task).errbacks }
            return (signature["options"]?["task_id"]?.stringValue, errbacks)
        case "chain":
            let last = signatures(signature["kwargs"]?["tasks"]).last
            return (last.flatMap { resultErrbacks(of: $0).id }, errbacks)
        default:
            return (signature["options"]?["task_id"]?.stringValue, errbacks)
        }
    }
}
