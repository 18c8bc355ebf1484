import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import RESP

/// Why a task ended as REVOKED.
package enum RevokeReason: String, Sendable {
    /// Its id was revoked before it ran.
    case revoked
    /// Its `expires` had passed when it was taken.
    case expired
    /// `revoke --terminate` stopped its handler.
    case terminated
}

/// What one delivery of a task came to: the executor's single answer, which the recorder alone turns into writes
/// (callbacks, errbacks, the result, the chord part, the ack) and the monitors observe.
package enum TaskOutcome: Sendable {
    /// The handler returned `result`.
    case succeeded(JSONValue, runtime: Duration)
    /// FAILURE with this exception; `errbacks` when the task's errbacks run (the handler threw, or retries ran
    /// out), not when the task could not run at all (not registered).
    case failed(StoredException, errbacks: Bool)
    /// The handler asked to run again later (`TaskRetry`, or `autoretry`); the recorder publishes the next attempt.
    case retrying(TaskRetry)
    /// The next attempt was published for `eta`.
    case retried(TaskRetry, eta: CeleryTimestamp)
    case revoked(RevokeReason)
    /// A cold shutdown interrupted the handler: the message goes back to its queue.
    case interrupted
    /// The handler threw `TaskReject`: with requeue, back to the end of its queue under acks-late; without, the
    /// recorder turns it into a failure.
    case rejected(TaskReject)
    /// The handler threw `TaskReplace`; the recorder publishes the replacement.
    case replacing(TaskReplace)
    /// The replacement was published: nothing is stored (Celery's `Ignore`), the message is acked.
    case replaced
}

extension Worker {
    /// Runs one decoded task: what ends it before it runs (revoked, expired, not registered), the ack (early or
    /// late), STARTED, the handler (`outcome(of:)`), then the recorder. `inline`: called on the broker connections'
    /// event loop (Worker.inlineExecutorLoop); the handler then runs there too only if it cannot hold the loop for
    /// long: a blocking one (it runs on the thread pool anyway), or one without time limits whose recent runs were
    /// quicker than `inlineHandlerLimit` (`HandlerPace`). Any other goes to the global pool.
    package func execute(_ message: TaskMessage, inline: Bool = false) async {
        if control.isRevoked(message) {
            TaskContext.logger(logger, taskID: message.id, taskName: message.taskName).info("task revoked, discarding")
            await record(.revoked(.revoked), of: message, ignoreResult: message.ignoreResult, acknowledged: false)
            return
        }
        if let expires = message.expires, expires < CeleryTimestamp.now() {
            TaskContext.logger(logger, taskID: message.id, taskName: message.taskName).info("task expired, discarding")
            await record(.revoked(.expired), of: message, ignoreResult: false, acknowledged: false)
            return
        }
        guard let task = registry[message.taskName] else {
            // Celery: reject (no requeue) and store NotRegistered.
            TaskContext.logger(logger, taskID: message.id, taskName: message.taskName).error(
                "received unregistered task \(message.taskName); discarding it"
            )
            let error = StoredException(
                type: "NotRegistered",
                module: "celery.exceptions",
                arguments: [.string(message.taskName)]
            )
            await record(.failed(error, errbacks: false), of: message, ignoreResult: false, acknowledged: false)
            return
        }
        let ignoreResult = message.ignoreResult || task.options.ignoreResult
        let acksLate = acksLate(task)
        if !acksLate {
            acknowledge(message.deliveryTag)
        }
        if configuration.trackStarted && !ignoreResult {
            let started: JSONValue = ["pid": .int(processID), "hostname": .string(configuration.hostname)]
            results.storeResult(
                taskID: message.id,
                meta: backend.meta(state: .started, result: started, message: message, taskID: message.id)
            )
        }
        let guarded = configuration.marksRunning
        let alone = guarded ? await enterCrashGuard(message) : false
        let outcome = await outcome(of: message, task, inline: inline)
        await record(outcome, of: message, ignoreResult: ignoreResult, acknowledged: !acksLate)
        if guarded { await leaveCrashGuard(message, alone: alone) }
    }

    /// Whether `task` is acked after it ran: its own `acksLate` option, else the worker's (Celery's per-task
    /// `acks_late` over `task_acks_late`).
    package func acksLate(_ task: RegisteredTask) -> Bool {
        task.options.acksLate ?? configuration.acksLate
    }

    /// The executor: runs the handler under its time limits and turns what it did into one outcome.
    package func outcome(of message: TaskMessage, _ task: RegisteredTask, inline: Bool) async -> TaskOutcome {
        // Made on first use: most tasks log nothing at the worker's level, and setting metadata is not free.
        lazy var logger = TaskContext.logger(self.logger, taskID: message.id, taskName: message.taskName)
        let limits = message.timeLimit
        // `control time_limit` replaces the handler's defaults; the message's own limits still win.
        let override = control.timeLimits(for: message.taskName)
        let softDefault = override.map { $0.soft.flatMap { TimeLimits.duration($0, default: nil) } }
        let hardDefault = override.map { $0.hard.flatMap { TimeLimits.duration($0, default: nil) } }
        let soft = TimeLimits.duration(limits.soft, default: softDefault ?? task.options.softTimeLimit)
        let hard = TimeLimits.duration(limits.hard, default: hardDefault ?? task.options.timeLimit)
        var context = TaskContext(
            message: message,
            hostname: configuration.hostname,
            logger: self.logger,
            redis: redisForTasks,
            worker: self
        )
        context.limits = (hard?.seconds, soft?.seconds)
        let debugging = self.logger.logLevel <= .debug
        if debugging { logger.debug("task started") }
        let started = ContinuousClock.now
        let termination = control.active.begin(message, acknowledged: !acksLate(task))
        defer { control.active.end(message, termination) }
        noteStarted(message)
        defer { noteFinished(message, runtime: ContinuousClock.now - started) }
        do {
            let arguments = TaskArguments(args: message.args, kwargs: message.kwargs)
            let context = context
            @Sendable func runHandler() async throws -> JSONValue {
                try await TimeLimits.run(soft: soft, hard: hard, termination: termination) {
                    defer { task.pace.record(ContinuousClock.now - started) }
                    return try await task.run(context, arguments)
                }
            }
            let offLoop =
                inline && !task.options.blocking
                && (soft != nil || hard != nil || !task.pace.isQuick(below: configuration.inlineHandlerLimit ?? .zero))
            let result =
                offLoop
                ? try await withTaskExecutorPreference(globalConcurrentExecutor) { try await runHandler() }
                : try await runHandler()
            let runtime = ContinuousClock.now - started
            if debugging { logger.debug("task succeeded", metadata: ["celery.task.runtime": "\(runtime)"]) }
            return .succeeded(result, runtime: runtime)
        } catch  where Task.isCancelled {
            logger.warning("cold shutdown: task interrupted, giving its message back")
            return .interrupted
        } catch  where error is TaskTerminated || termination.isFired {
            logger.info("task terminated by a revoke")
            return .revoked(.terminated)
        } catch let request as TaskRetry {
            return .retrying(request)
        } catch let replace as TaskReplace {
            return .replacing(replace)
        } catch let reject as TaskReject {
            logger.warning("task rejected", metadata: ["celery.task.requeue": "\(reject.requeue)"])
            return .rejected(reject)
        } catch let error where task.options.autoretry?.matches(error) == true {
            let policy = task.options.autoretry!
            return .retrying(
                TaskRetry(
                    countdown: policy.delay(afterRetries: message.retries),
                    maxRetries: policy.maxRetries,
                    cause: ErrorCause(error)
                )
            )
        } catch {
            let stored = StoredException(error)
            logger.error("task raised \(stored.repr)")
            return .failed(stored, errbacks: true)
        }
    }

    /// The recorder: applies an outcome in Celery's order — follow-ups first (callbacks and the chain's next task
    /// after a success, errbacks after a failure, the next attempt of a retry), then the monitors, then the result
    /// with its chord part, then the ack when the message was not acked before it ran. The one place a task ends.
    package func record(
        _ outcome: TaskOutcome,
        of message: TaskMessage,
        ignoreResult: Bool,
        acknowledged: Bool
    ) async {
        var outcome = outcome
        var children: JSONValue = .null
        var rejected = false
        // What the handler sent (TaskContext.send) goes first in its children, before its callbacks.
        let trail = takeTrail(of: message.id)
        switch outcome {
        case .succeeded(let result, _):
            do {
                children = try await publishSuccessors(of: message, result: result)
                if !trail.isEmpty { children = .array(trail + (children.arrayValue ?? [])) }
            } catch {
                TaskContext.logger(logger, taskID: message.id, taskName: message.taskName).error(
                    "cannot publish the task's callbacks or chain; storing FAILURE",
                    metadata: ["error": "\(error)"]
                )
                let failure = StoredException(
                    type: "OperationalError",
                    module: "kombu.exceptions",
                    arguments: [.string("cannot publish callbacks or the next chain task: \(error)")]
                )
                outcome = .failed(failure, errbacks: false)
            }
        case .retrying(let request):
            outcome = await publishRetry(of: message, request)
        case .replacing(let request):
            outcome = await publishReplacement(of: message, request)
        case .interrupted:
            await giveBackInterrupted(message, acknowledged: acknowledged)
            return
        case .rejected(let reject) where reject.requeue:
            await requeueRejected(message, acknowledged: acknowledged)
            return
        case .rejected(let reject):
            // Celery (worker/request.py on_failure): a rejection without requeue is stored as a failure, so the
            // task does not stay PENDING; then the message is rejected, that is acked, and task-rejected sent.
            outcome = .failed(StoredException(reject), errbacks: true)
            rejected = !acknowledged
        default:
            break
        }
        observe(outcome, of: message)
        switch outcome {
        case .succeeded(let result, _):
            // A chord header's result is stored together with its chord part (Worker+Chord.swift).
            // (JSONValue is ExpressibleByNilLiteral: spell out the optional, or `nil` would store `null`.)
            var meta: JSONValue? = .none
            if !ignoreResult {
                meta = backend.meta(
                    state: .success,
                    result: result,
                    message: message,
                    taskID: message.id,
                    children: children
                )
            }
            await storeOutcome(.success, result: result, meta: meta, of: message)
        case .failed(let error, let errbacks):
            if errbacks {
                await runErrbacks(
                    message.embed["errbacks"]?.arrayValue ?? [],
                    request: errbackRequest(of: message),
                    error: error,
                    traceback: error.traceback(taskName: message.taskName, hostname: configuration.hostname),
                    failedTaskID: message.id,
                    from: origin(of: message)
                )
            }
            await storeFailure(error, message, ignoreResult: ignoreResult)
        case .retried(let request, let eta):
            if !ignoreResult { storeRetry(of: message, request, eta: eta) }
        case .revoked(let reason):
            // Through the chord part-return too, so a chord whose header task was revoked still completes.
            await store(
                .revoked,
                StoredException(
                    type: "TaskRevokedError",
                    module: "celery.exceptions",
                    arguments: [.string(reason.rawValue)]
                ),
                message,
                traceback: nil,
                ignoreResult: ignoreResult
            )
        case .replaced:
            // Celery's Ignore: the replacement stores the result under this task's id.
            break
        case .retrying, .replacing, .interrupted, .rejected:
            preconditionFailure("resolved above")
        }
        if !acknowledged {
            acknowledge(message.deliveryTag)
        }
        if rejected { events.taskRejected(id: message.id, requeue: false) }
    }

    /// What the metrics and the task events see of an outcome: called once per delivery, by the recorder.
    package func observe(_ outcome: TaskOutcome, of message: TaskMessage) {
        switch outcome {
        case .succeeded(let result, let runtime):
            noteSucceeded(message, result: result, runtime: runtime)
        case .failed(let error, _):
            noteFailed(message, error)
        case .retried(let request, _):
            noteRetried(message, request.cause.map(StoredException.init))
        case .revoked(.revoked):
            events.taskRevoked(id: message.id)
        case .revoked(.expired):
            events.taskRevoked(id: message.id, expired: true)
        case .revoked(.terminated):
            events.taskRevoked(id: message.id, terminated: true, signum: 15)
        case .retrying, .replacing, .replaced, .interrupted, .rejected:
            break
        }
    }

    /// A decoded message as the delivery it came in: its priority list (its queue from the routing key, else this
    /// worker's first queue), its envelope and its tag.
    package func delivery(of message: TaskMessage) -> Delivery {
        Delivery(
            list: KombuLayout.list(
                queue: message.routingKey.isEmpty ? configuration.queues.first ?? "celery" : message.routingKey,
                priority: message.priority
            ),
            envelope: message.rawEnvelope,
            tag: message.deliveryTag
        )
    }

    /// `TaskReject(requeue: true)`: under acks-late the message goes back to the end of its queue marked
    /// redelivered, as kombu's `reject(requeue=True)` (LPUSH, so the messages queued meanwhile run first); no
    /// result is stored. Under early ack it was acked before the handler ran and is not requeued, as in Celery.
    package func requeueRejected(_ message: TaskMessage, acknowledged: Bool) async {
        guard !acknowledged else {
            TaskContext.logger(logger, taskID: message.id, taskName: message.taskName).warning(
                "TaskReject(requeue: true) without --acks-late: the message was acked before it ran, not requeued"
            )
            return
        }
        await restore(delivery(of: message), atBack: true)
        // No longer this worker's: its score must not be refreshed. Not acked either: the tag is back on the
        // queue, and a late ack would delete the entry of the worker that takes it next.
        machine.withLock { $0.acknowledged(message.deliveryTag) }
        events.taskRejected(id: message.id, requeue: true)
    }

    /// Puts an interrupted task's message back at the front of its list. Under acks_late it is still in `unacked`
    /// and the restore script moves it; under early ack it was acked already, so the envelope is pushed again
    /// (where kombu would lose it).
    package func giveBackInterrupted(_ message: TaskMessage, acknowledged: Bool) async {
        let delivery = delivery(of: message)
        if !acknowledged {
            await restore(delivery)
            return
        }
        do {
            try await brokerClient.send(
                RESPCommand("RPUSH", delivery.list, RESPBytes(KombuBroker.markedRedelivered(delivery.envelope)))
            )
        } catch {
            logger.error("cannot give an interrupted task back; it is lost", metadata: ["error": "\(error)"])
        }
    }

    /// Stores FAILURE with the exception and its traceback text (unless results are ignored), returns the chord
    /// part of a chord header, and fails the rest of the task's chain (Celery's `mark_as_failure`).
    package func storeFailure(_ error: StoredException, _ message: TaskMessage, ignoreResult: Bool = false) async {
        let traceback = error.traceback(taskName: message.taskName, hostname: configuration.hostname)
        await store(.failure, error, message, traceback: traceback, ignoreResult: ignoreResult)
        await failChain(of: message, error: error, traceback: traceback)
    }

    private func store(
        _ state: TaskState,
        _ error: StoredException,
        _ message: TaskMessage,
        traceback: String?,
        ignoreResult: Bool = false
    ) async {
        let meta = backend.meta(
            state: state,
            result: error.resultJSON,
            traceback: traceback,
            message: message,
            taskID: message.id
        )
        await storeOutcome(state, result: error.resultJSON, meta: ignoreResult ? JSONValue?.none : meta, of: message)
    }

    /// A message that cannot become a task: say why, keep a copy in the dead-letter list, store a FAILURE when a
    /// task id is known (so a waiting client gets an error instead of a timeout), and ack it (as Celery does).
    package func reject(_ delivery: Delivery, _ error: TaskMessageError) async {
        logger.error(
            "rejecting a message that cannot run: \(error)",
            metadata: [
                "celery.queue": "\(delivery.list)",
                "celery.message.bytes": "\(delivery.envelope.count)",
                "celery.message.head": "\(String(decoding: delivery.envelope.prefix(160), as: UTF8.self))",
            ]
        )
        if let id = error.taskID {
            events.taskRejected(id: id, requeue: false)
            let stored: StoredException
            switch error.code {
            case .contentTypeRefused:
                stored = StoredException(
                    type: "ContentDisallowed",
                    module: "kombu.exceptions",
                    arguments: [.string(error.detail)]
                )
            case .bodyTooLarge:
                stored = StoredException(
                    type: "LimitExceeded",
                    module: "kombu.exceptions",
                    arguments: [.string(error.detail + " (--max-message-size)")]
                )
            default:
                stored = StoredException(
                    type: "DecodeError",
                    module: "kombu.exceptions",
                    arguments: [.string(error.description)]
                )
            }
            results.storeResult(
                taskID: id,
                meta: backend.meta(
                    state: .failure,
                    result: stored.resultJSON,
                    traceback: stored.traceback(taskName: error.taskName ?? "?", hostname: configuration.hostname),
                    message: nil,
                    taskID: id
                )
            )
        }
        // The tag the pop recorded the message under: its text search can find one in an envelope that does not
        // parse. Without one the message was not recorded and the pop already dead-lettered it.
        if let tag = delivery.tag {
            // Recorded in unacked by the pop; the script only dead-letters untagged messages, so copy it here.
            do {
                try await broker.deadLetter(delivery.envelope)
            } catch {
                logger.warning("cannot copy the message to the dead-letter list", metadata: ["error": "\(error)"])
            }
            acknowledge(tag)
        }
    }

    /// A running task's own state (``TaskContext/updateState(_:meta:)``), stored as Celery's `update_state`
    /// stores it: the meta document with that status, the task's meta as its result, and no `date_done`.
    package func storeCustomState(_ state: String, meta: JSONValue, taskID: String) {
        let message = control.active.entry(taskID)?.message
        if let message, message.ignoreResult || registry[message.taskName]?.options.ignoreResult == true {
            return
        }
        let ready = TaskState(rawValue: state)?.isReady ?? false
        results.storeResult(
            taskID: taskID,
            meta: backend.meta(status: state, ready: ready, result: meta, message: message, taskID: taskID)
        )
    }
}
