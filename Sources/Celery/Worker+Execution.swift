import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import RESP

extension Worker {
    /// Runs one decoded task: expiry check, lookup, ack (early or late), STARTED, the handler, the result.
    /// `inline`: called on the broker connections' event loop (Worker.inlineExecutorLoop); the handler then runs
    /// there too only if it cannot hold the loop for long: a blocking one (it runs on the thread pool anyway), or one
    /// without time limits whose recent runs were quicker than `inlineHandlerLimit` (`HandlerPace`). Any other goes
    /// to the global pool.
    package func execute(_ message: TaskMessage, inline: Bool = false) async {
        // Made on first use: most tasks log nothing at the worker's level, and setting metadata is not free.
        lazy var logger = TaskContext.logger(self.logger, taskID: message.id, taskName: message.taskName)

        if await discardRevoked(message) { return }
        if let expires = message.expires, expires < CeleryTimestamp.now() {
            logger.info("task expired, discarding")
            events.taskRevoked(id: message.id, expired: true)
            await store(
                .revoked,
                StoredException(type: "TaskRevokedError", module: "celery.exceptions", arguments: ["expired"]),
                message,
                traceback: nil
            )
            acknowledge(message.deliveryTag)
            return
        }
        guard let task = registry[message.taskName] else {
            // Celery: reject (no requeue) and store NotRegistered.
            logger.error("received unregistered task \(message.taskName); discarding it")
            let error = StoredException(
                type: "NotRegistered",
                module: "celery.exceptions",
                arguments: [.string(message.taskName)]
            )
            await storeFailure(error, message)
            noteFailed(message, error)
            acknowledge(message.deliveryTag)
            return
        }
        let ignoreResult = message.ignoreResult || task.options.ignoreResult
        if !configuration.acksLate {
            acknowledge(message.deliveryTag)
        }
        if configuration.trackStarted && !ignoreResult {
            let started: JSONValue = ["pid": .int(processID), "hostname": .string(configuration.hostname)]
            batcher.storeResult(
                taskID: message.id,
                meta: backend.meta(state: .started, result: started, message: message, taskID: message.id)
            )
        }
        let context = TaskContext(
            message: message,
            hostname: configuration.hostname,
            logger: self.logger,
            redis: redisForTasks
        )
        let debugging = self.logger.logLevel <= .debug
        if debugging { logger.debug("task started") }
        let started = ContinuousClock.now
        let termination = control.active.begin(message, acknowledged: !configuration.acksLate)
        defer { control.active.end(message, termination) }
        noteStarted(message)
        defer { noteFinished(message, runtime: ContinuousClock.now - started) }
        do {
            let arguments = TaskArguments(args: message.args, kwargs: message.kwargs)
            let limits = message.timeLimit
            // `control time_limit` replaces the handler's defaults; the message's own limits still win.
            let override = control.timeLimits(for: message.taskName)
            let softDefault = override.map { $0.soft.flatMap { TimeLimits.duration($0, default: nil) } }
            let hardDefault = override.map { $0.hard.flatMap { TimeLimits.duration($0, default: nil) } }
            let soft = TimeLimits.duration(limits.soft, default: softDefault ?? task.options.softTimeLimit)
            let hard = TimeLimits.duration(limits.hard, default: hardDefault ?? task.options.timeLimit)
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
            // Follow-ups go out before the result is stored and before the ack (see Worker+Canvas.swift).
            let children: JSONValue
            do {
                children = try await publishSuccessors(of: message, result: result)
            } catch {
                logger.error(
                    "cannot publish the task's callbacks or chain; storing FAILURE",
                    metadata: ["error": "\(error)"]
                )
                let failure = StoredException(
                    type: "OperationalError",
                    module: "kombu.exceptions",
                    arguments: [.string("cannot publish callbacks or the next chain task: \(error)")]
                )
                noteFailed(message, failure)
                await storeFailure(failure, message, ignoreResult: ignoreResult)
                if configuration.acksLate { acknowledge(message.deliveryTag) }
                return
            }
            noteSucceeded(message, result: result, runtime: runtime)
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
        } catch  where Task.isCancelled {
            // Cold shutdown: the handler was interrupted. Give the message back instead of storing a failure.
            logger.warning("cold shutdown: task interrupted, giving its message back")
            await giveBackInterrupted(message)
            return
        } catch  where error is TaskTerminated || termination.isFired {
            // `revoke --terminate`: REVOKED with reason "terminated", as Celery's terminate stores it.
            logger.info("task terminated by a revoke")
            events.taskRevoked(id: message.id, terminated: true, signum: 15)
            // Through the chord part-return too, so a chord whose header task was terminated still completes.
            await store(
                .revoked,
                StoredException(type: "TaskRevokedError", module: "celery.exceptions", arguments: ["terminated"]),
                message,
                traceback: nil,
                ignoreResult: ignoreResult
            )
        } catch let request as TaskRetry {
            await retry(message, request, ignoreResult: ignoreResult)
        } catch let error where task.options.autoretry?.matches(error) == true {
            let policy = task.options.autoretry!
            let request = TaskRetry(
                countdown: policy.delay(afterRetries: message.retries),
                maxRetries: policy.maxRetries,
                cause: ErrorCause(error)
            )
            await retry(message, request, ignoreResult: ignoreResult)
        } catch {
            let stored = StoredException(error)
            logger.error("task raised \(stored.repr)")
            noteFailed(message, stored)
            await publishErrbacks(of: message)
            await storeFailure(stored, message, ignoreResult: ignoreResult)
        }
        if configuration.acksLate {
            acknowledge(message.deliveryTag)
        }
    }

    /// Puts an interrupted task's message back at the front of its list. Under acks_late it is still in `unacked`
    /// and the restore script moves it; under early ack it was acked already, so the envelope is pushed again
    /// (where kombu would lose it).
    package func giveBackInterrupted(_ message: TaskMessage) async {
        let delivery = Delivery(
            list: KombuLayout.list(
                queue: message.routingKey.isEmpty ? configuration.queues.first ?? "celery" : message.routingKey,
                priority: message.priority
            ),
            envelope: message.rawEnvelope,
            tag: message.deliveryTag
        )
        if configuration.acksLate {
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
            default:
                stored = StoredException(
                    type: "DecodeError",
                    module: "kombu.exceptions",
                    arguments: [.string(error.description)]
                )
            }
            batcher.storeResult(
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
}
