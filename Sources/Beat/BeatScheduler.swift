import CeleryProtocol
import JSON
import Logging
import ProcessTuning
import Redis
import ServiceLifecycle
import Synchronization

/// The beat loop: takes (or waits for) the leader lock, syncs the schedule into Redis, and fires each due entry
/// through one atomic step in Redis (advance + push), so every slot is pushed once whichever process leads.
public final class BeatScheduler: Service, Sendable {
    /// What happened in one step of the loop (for tests and logs).
    public struct StepReport: Sendable {
        public var leader: Bool
        public var sent: [String]
        public var skipped: [String]
        public var wake: Int64
        /// Whether this step wrote the schedule into Redis.
        public var synced = false
    }

    let configuration: BeatConfiguration
    let state: BeatRedisState
    let clock: any BeatClock
    let logger: Logger
    let reload: @Sendable () throws(BeatError) -> BeatScheduleFile
    private let replyTo = OutgoingTask.newID()
    private let current: Mutex<BeatScheduleFile>
    private let reloadRequested = Atomic<Bool>(false)
    private let loop = Mutex<LoopState>(LoopState())

    private struct LoopState {
        var leader = false
        var synced = false
        var lastRenew: Int64 = 0
        var failures = 0
    }

    /// Creates the scheduler. `reload` reads the schedule file again (on SIGHUP).
    public init(
        configuration: BeatConfiguration,
        schedule: BeatScheduleFile,
        state: BeatRedisState,
        clock: any BeatClock = SystemBeatClock(),
        logger: Logger,
        reload: @escaping @Sendable () throws(BeatError) -> BeatScheduleFile
    ) {
        self.configuration = configuration
        self.state = state
        self.clock = clock
        self.logger = logger
        self.reload = reload
        self.current = Mutex(schedule)
    }

    /// The schedule in use.
    public var schedule: BeatScheduleFile { current.withLock { $0 } }

    /// Whether this process led at its last step.
    public var isLeader: Bool { loop.withLock { $0.leader } }

    /// Asks the loop to read the schedule file again at its next step (SIGHUP).
    public func requestReload() {
        reloadRequested.store(true, ordering: .sequentiallyConsistent)
    }

    public func run() async throws {
        logger.info(
            "beat starting",
            metadata: [
                "beat.entries": "\(schedule.entries.count)", "beat.lock.timeout.ms": "\(configuration.lockTimeout)",
            ]
        )
        await cancelWhenGracefulShutdown {
            var pagesReleased = false
            while !Task.isCancelled {
                let report = await self.step()
                // After the first step (a leader's sync, or a standby's first try for the lock) the start-up code
                // is released, once; the heap is trimmed after every step that synced or sent.
                let busy = report.synced || !report.sent.isEmpty
                if self.configuration.releaseMemory && (busy || !pagesReleased) {
                    if !pagesReleased { ExecutablePages.release(after: "start-up", logger: self.logger) }
                    pagesReleased = true
                    ExecutablePages.trimHeap()
                }
                do {
                    try await self.clock.sleep(until: report.wake)
                } catch {
                    return
                }
            }
        }
        if isLeader {
            try? await state.release(token: configuration.token)
            logger.info("beat stopped; leader lock released")
        } else {
            logger.info("beat stopped")
        }
    }

    /// One step: reload if asked, keep or take the lock, sync after a change, fire what is due. Never throws:
    /// Redis failures are logged and retried with backoff.
    @discardableResult
    public func step() async -> StepReport {
        let now = clock.now()
        var report = StepReport(leader: false, sent: [], skipped: [], wake: now + configuration.standbyInterval)
        if reloadRequested.exchange(false, ordering: .sequentiallyConsistent) {
            do {
                let file = try reload()
                current.withLock { $0 = file }
                loop.withLock { $0.synced = false }
                logger.info("schedule reloaded", metadata: ["beat.entries": "\(file.entries.count)"])
            } catch {
                logger.error("schedule not reloaded; the previous one stays in use: \(error.message)")
            }
        }
        do {
            var (leader, lastRenew, synced) = loop.withLock { ($0.leader, $0.lastRenew, $0.synced) }
            if !leader || now - lastRenew >= configuration.renewInterval {
                let outcome = try await state.acquire(token: configuration.token, timeout: configuration.lockTimeout)
                let held = outcome.held
                if held && !leader {
                    logger.info("beat is the leader", metadata: ["beat.token": "\(configuration.token)"])
                    synced = false
                } else if outcome == .taken {
                    // The lock vanished while this process led (Redis restarted or was flushed): its schedule may
                    // have gone with it, so write the entries again (kept due times stay as they are).
                    logger.warning("beat's leader lock had vanished from Redis; syncing the schedule again")
                    synced = false
                } else if !held && leader {
                    logger.warning("beat lost the leader lock; standing by")
                }
                leader = held
                lastRenew = held ? now : lastRenew
                loop.withLock {
                    $0.leader = held
                    $0.lastRenew = lastRenew
                }
            }
            report.leader = leader
            guard leader else {
                loop.withLock { $0.failures = 0 }
                return report
            }
            let file = schedule
            if !synced {
                try await state.sync(file.entries, now: now, token: configuration.token) {
                    try await self.renewIfDue()
                }
                loop.withLock { $0.synced = true }
                report.synced = true
            }
            try await fireDue(now: now, file: file, report: &report)
            let earliest = try await state.earliestDue() ?? .max
            let renewedAt = loop.withLock { $0.lastRenew }
            report.wake = min(earliest, renewedAt + configuration.renewInterval, now + configuration.maximumSleep)
            report.wake = max(report.wake, now + 1)
            loop.withLock { $0.failures = 0 }
        } catch let error as BeatError where error.code == .notLeader {
            logger.warning("beat lost the leader lock; standing by")
            loop.withLock { $0.leader = false }
            report.leader = false
        } catch {
            let failures = loop.withLock {
                $0.failures += 1
                return $0.failures
            }
            let delay = RedisBackoff(initial: .milliseconds(100), maximum: .seconds(5)).delay(afterFailures: failures)
            let milliseconds = delay.components.seconds * 1000 + delay.components.attoseconds / 1_000_000_000_000_000
            logger.warning("beat's step in Redis failed, retrying", metadata: ["error": "\(error)"])
            report.wake = now + max(50, milliseconds)
        }
        return report
    }

    /// Renews the lock when a renewal is due in the middle of a long step (a big sync or many due entries), so a
    /// busy leader does not lose it. Throws `notLeader` when the lock has gone to another process.
    private func renewIfDue() async throws {
        let now = clock.now()
        guard now - loop.withLock({ $0.lastRenew }) >= configuration.renewInterval else { return }
        let outcome = try await state.acquire(token: configuration.token, timeout: configuration.lockTimeout)
        guard outcome.held else { throw BeatError(.notLeader, "the beat lock is held by another") }
        loop.withLock { $0.lastRenew = now }
    }

    private func fireDue(now: Int64, file: BeatScheduleFile, report: inout StepReport) async throws {
        let entries = Dictionary(file.entries.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let deadline = configuration.startingDeadline ?? file.startingDeadline
        while true {
            try await renewIfDue()
            // Each batch takes the time afresh, so sent times (and lag) are true for the last batch of a big tick.
            let batchNow = max(now, clock.now())
            let due = try await state.due(now: batchNow, limit: configuration.batchSize)
            var steps: [BeatRedisState.Fire] = []
            var stepEntries: [BeatEntry] = []
            for (name, dueAt) in due {
                guard let entry = entries[name], entry.enabled else {
                    // Scheduled in Redis but not in this schedule: another version of the file synced it.
                    try await state.remove(name, token: configuration.token)
                    continue
                }
                let plan = BeatPlan.make(
                    schedule: entry.schedule,
                    due: dueAt,
                    now: batchNow,
                    startingDeadline: deadline
                )
                var step = BeatRedisState.Fire(
                    name: name,
                    expectedDue: dueAt,
                    nextDue: plan.nextDue,
                    firedAt: batchNow,
                    message: nil,
                    record: ""
                )
                if plan.send {
                    let sentAt = CeleryTimestamp(secondsSince1970: Double(batchNow) / 1000)
                    let task = entry.message(origin: configuration.origin, replyTo: replyTo, now: sentAt)
                    step.message = (task.list, task.queue, task.beatEnvelope(now: sentAt))
                    let record: JSONValue = [
                        "entry": .string(name),
                        "task": .string(entry.task),
                        "id": .string(task.id),
                        "due_ms": .int(Int(dueAt)),
                        "sent_ms": .int(Int(batchNow)),
                        "collapsed": .bool(plan.collapsed),
                        "leader": .string(configuration.token),
                    ]
                    step.record = record.serializedString()
                }
                steps.append(step)
                stepEntries.append(entry)
            }
            let outcomes = try await state.fire(
                steps,
                token: configuration.token,
                historyLimit: configuration.historyLimit
            )
            for (entry, outcome) in zip(stepEntries, outcomes) {
                switch outcome {
                case .sent:
                    report.sent.append(entry.name)
                    logger.info(
                        "Scheduler: Sending due task \(entry.name) (\(entry.task))",
                        metadata: ["beat.entry": "\(entry.name)", "celery.task.name": "\(entry.task)"]
                    )
                case .skipped:
                    report.skipped.append(entry.name)
                    logger.warning(
                        "missed slot of \(entry.name) is past the starting deadline; skipped",
                        metadata: ["beat.entry": "\(entry.name)"]
                    )
                case .stale:
                    break
                }
            }
            if due.count < configuration.batchSize { return }
        }
    }
}
