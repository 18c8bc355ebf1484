import CeleryProtocol
import CeleryRedis
import DequeModule
import Logging
import Redis
import Synchronization

extension WorkerConfiguration {
    /// Whether this worker marks messages as running before their handlers start: only acks-late messages are
    /// still in `unacked` while they run, so only they can come back after a crash.
    package var marksRunning: Bool { acksLate && maximumCrashes > 0 }
}

/// The crash guard's marks: before an acks-late handler starts, its delivery tag is recorded in Redis as running,
/// so that a restore of the message after its worker died counts as a crash (``KombuBroker/restoreExpiredScript``).
/// Messages fetched ahead and never started carry no mark and are restored as before.
///
/// A handler must not start before its mark is written (a trap at its first line would not be counted), so each
/// `mark` waits for the write. Up to `maximumWrites` HSETs travel at once, each caller writing its own tag; the
/// tags of those that come while all of them travel wait, and when a write returns, the first waiter writes every
/// tag waiting in one HSET. Each caller writes at most one batch, so a busy worker does not keep one handler
/// waiting behind the others. More than one write in flight matters: Redis answers an HSET only after the result
/// scripts queued before it, and with a single write at a time the executors of a draining worker waited on it.
package final class RunningMarks: Sendable {
    private enum Role {
        /// Write these tags (the caller's own first), then resume their waiters.
        case lead([Waiter])
        /// The caller's tag was written (or the write failed and was logged).
        case written
    }

    private struct Waiter {
        var tag: String
        var continuation: CheckedContinuation<Role, Never>
    }

    private struct State {
        var writes = 0
        var waiting: [Waiter] = []
    }

    private let state = Mutex(State())
    private let write: @Sendable ([String]) async throws(RedisError) -> Void
    private let logger: Logger
    package let maximumWrites: Int

    package init(broker: any Broker, worker: String, maximumWrites: Int = 4, logger: Logger) {
        self.write = { tags throws(RedisError) in try await broker.markRunning(tags, worker: worker) }
        self.maximumWrites = max(1, maximumWrites)
        self.logger = logger
    }

    /// Returns once `tag` is marked as running in Redis (or the write failed: the handler then runs unguarded).
    package func mark(_ tag: String) async {
        let maximumWrites = self.maximumWrites
        let leads = state.withLock { state -> Bool in
            guard state.writes < maximumWrites else { return false }
            state.writes += 1
            return true
        }
        var batch: [Waiter] = []
        if !leads {
            let role = await withCheckedContinuation { continuation in
                // Decided again under the lock: a write in flight may have ended meanwhile.
                let leadsNow = state.withLock { state -> Bool in
                    guard state.writes < maximumWrites else {
                        state.waiting.append(Waiter(tag: tag, continuation: continuation))
                        return false
                    }
                    state.writes += 1
                    return true
                }
                if leadsNow { continuation.resume(returning: .lead([])) }
            }
            switch role {
            case .written: return
            case .lead(let waiters): batch = waiters
            }
        }
        do {
            try await write([tag] + batch.map(\.tag))
        } catch {
            logger.warning(
                "cannot mark tasks as running for the crash guard; they run unguarded",
                metadata: ["error": "\(error)", "count": "\(batch.count + 1)"]
            )
        }
        for waiter in batch { waiter.continuation.resume(returning: .written) }
        // What came while every write travelled is the next batch; its first caller writes it, in this slot.
        let next = state.withLock { state -> [Waiter] in
            guard !state.waiting.isEmpty else {
                state.writes -= 1
                return []
            }
            defer { state.waiting = [] }
            return state.waiting
        }
        if let first = next.first { first.continuation.resume(returning: .lead(Array(next.dropFirst()))) }
    }
}

/// Runs the crash guard's suspects alone. A restore cannot tell which of the handlers running when a worker died
/// trapped, so it counts a crash for each; run again side by side, an innocent task would be counted at every crash
/// of the guilty one it sits next to in the queue, and failed with it. A suspect (a message counted once already)
/// therefore waits until the handlers running finish, and no other handler starts until it has finished and its
/// mark is cleared: its next crash, if any, is its own. Only acks-late handlers under the guard pass here; without
/// suspects a handler passes with one lock and no wait.
package final class SuspectGate: Sendable {
    private struct Waiter {
        var alone: Bool
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var running = 0
        var alone = false
        var waiting = Deque<Waiter>()

        /// Counts the handler in if it may start now: nobody waits before it, no suspect runs, and a suspect
        /// only when nothing runs.
        mutating func admit(alone: Bool) -> Bool {
            guard waiting.isEmpty, !self.alone, !alone || running == 0 else { return false }
            running += 1
            self.alone = alone
            return true
        }
    }

    private let state = Mutex(State())

    package init() {}

    /// How many handlers wait to start.
    package var waiting: Int { state.withLock { $0.waiting.count } }

    /// Returns when the handler may start: at once when no suspect runs or waits (and `alone` is false), else in
    /// arrival order.
    package func enter(alone: Bool) async {
        // Without a continuation when the way is free (nearly always): making one costs a suspension.
        guard !state.withLock({ $0.admit(alone: alone) }) else { return }
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                if state.admit(alone: alone) { return true }
                state.waiting.append(Waiter(alone: alone, continuation: continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// The handler ended (and a suspect's mark is cleared): let the next ones start.
    package func leave() {
        let admitted = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.running -= 1
            if state.running == 0 { state.alone = false }
            var admitted: [CheckedContinuation<Void, Never>] = []
            while let next = state.waiting.first, !state.alone, !next.alone || state.running == 0 {
                state.waiting.removeFirst()
                state.running += 1
                state.alone = next.alone
                admitted.append(next.continuation)
            }
            return admitted
        }
        for continuation in admitted { continuation.resume() }
    }
}

extension Worker {
    /// The crash guard around an acks-late handler: a suspect runs alone (``SuspectGate``); every handler is marked
    /// as running before it starts. Returns whether it ran alone, for `leaveCrashGuard`.
    package func enterCrashGuard(_ message: TaskMessage) async -> Bool {
        var alone = false
        // Only a restored message can have crashed a worker: one round trip for those, none for the rest.
        if message.redelivered {
            do {
                alone = try await broker.crashCount(message.deliveryTag) > 0
            } catch {
                logger.warning("cannot read a task's crash count; it runs as usual", metadata: ["error": "\(error)"])
            }
        }
        await suspects.enter(alone: alone)
        if alone {
            TaskContext.logger(logger, taskID: message.id, taskName: message.taskName).info(
                "task was running when a worker died; running it alone"
            )
        }
        // In Redis before the handler starts: a handler that traps at once still counts as a crash.
        await runningMarks.mark(message.deliveryTag)
        return alone
    }

    /// After the handler: a suspect's mark goes before the others start (its ack may still be on its way), so a
    /// crash caused by another handler is not counted against it.
    package func leaveCrashGuard(_ message: TaskMessage, alone: Bool) async {
        if alone {
            do {
                try await broker.clearRunning(message.deliveryTag)
            } catch {
                logger.warning("cannot clear a task's running mark", metadata: ["error": "\(error)"])
            }
        }
        suspects.leave()
    }

    /// The crash guard's claim: `crashed` was running each of the last `crashes` times its worker died. Instead of
    /// delivering it again, fail it as Celery fails a task whose pool process died (`WorkerLostError`, errbacks,
    /// chord error, the rest of its chain), keep a copy in the dead-letter list, and ack it.
    package func failCrashed(_ crashed: CrashedDelivery) async {
        let delivery = crashed.delivery
        // Held until acked: the refresh keeps its `unacked_index` score fresh, so no other restore takes it.
        if let tag = delivery.tag { machine.withLock { $0.claimed(tag) } }
        let message: TaskMessage
        do {
            message = try Self.decodeHeld(delivery, bodyLimit: bodyLimit)
        } catch {
            await reject(delivery, error)
            return
        }
        TaskContext.logger(logger, taskID: message.id, taskName: message.taskName).error(
            """
            task was running each time its worker died (\(crashed.crashes) times): failing it with WorkerLostError \
            instead of delivering it again; a copy is in \(broker.deadLetterKey)
            """,
            metadata: ["celery.delivery_tag": "\(message.deliveryTag)"]
        )
        do {
            try await broker.deadLetter(delivery.envelope)
        } catch {
            logger.warning("cannot copy the message to the dead-letter list", metadata: ["error": "\(error)"])
        }
        let error = StoredException(
            type: "WorkerLostError",
            module: "billiard.exceptions",
            arguments: [
                .string(
                    "Worker exited prematurely: the task was running each time its worker died "
                        + "(\(crashed.crashes) times)."
                )
            ]
        )
        let ignoreResult = message.ignoreResult || registry[message.taskName]?.options.ignoreResult == true
        await record(.failed(error, errbacks: true), of: message, ignoreResult: ignoreResult, acknowledged: false)
    }
}
