import CeleryProtocol
import CeleryRedis
import Synchronization

/// The worker as the driver of its ``WorkerStateMachine``: each method takes the lock, feeds the machine one event
/// and carries out the actions it returns after releasing the lock (resuming continuations, giving messages back).
extension Worker {
    package typealias ExecutorWaiter = CheckedContinuation<ReservedWork?, Never>
    package typealias InlineWaiter = CheckedContinuation<(ReservedWork, alone: Bool)?, Never>
    package typealias CreditWaiter = CheckedContinuation<Int, Never>
    package typealias Machine = WorkerStateMachine<ExecutorWaiter, InlineWaiter, CreditWaiter>

    /// Waits until some prefetch credit is free and takes all of it; 0 once stopping.
    func acquireCredit() async -> Int {
        await withCheckedContinuation { continuation in
            switch machine.withLock({ $0.requestCredit(continuation) }) {
            case .fetch(let credit): continuation.resume(returning: credit)
            case .stop: continuation.resume(returning: 0)
            case .wait: break
            }
        }
    }

    /// Gives back credit that was taken and not used.
    func releaseCredit(_ amount: Int) {
        resume(machine.withLock { $0.releaseCredit(amount) })
    }

    /// A task that kept its credit ended: the credit is free again.
    func finished(keepsCredit: Bool) {
        guard keepsCredit else { return }
        resume(machine.withLock { $0.finished(keepsCredit: true) })
    }

    func resume(_ wake: Machine.CreditWake?) {
        if let wake { wake.waiter.resume(returning: wake.credit) }
    }

    /// Reserves what a pop brought with `taken` credit.
    func reserveFetched(_ deliveries: [Delivery], taken: Int) async {
        let (handovers, wake) = machine.withLock { $0.fetched(deliveries, taken: taken) }
        resume(wake)
        for handover in handovers { await carryOut(handover) }
    }

    /// Reserves a message whose ETA or rate-limit slot has come.
    func reserve(_ work: ReservedWork) async {
        await carryOut(machine.withLock { $0.reserve(work) })
    }

    private func carryOut(_ handover: Machine.Handover) async {
        switch handover {
        case .queued: break
        case .executor(let waiter, let work): waiter.resume(returning: work)
        case .inline(let waiter, let work, let alone): waiter.resume(returning: (work, alone))
        case .restore(let delivery): await restore(delivery)
        }
    }

    /// The next reserved message for an executor, waiting for one; nil once stopping.
    func takeWork() async -> ReservedWork? {
        await withCheckedContinuation { continuation in
            switch machine.withLock({ $0.executorReady(continuation) }) {
            case .run(let work): continuation.resume(returning: work)
            case .exit: continuation.resume(returning: nil)
            case .wait: break
            }
        }
    }

    /// The next reserved message for the event loop's executor, and whether it came alone to an idle worker.
    func takeInlineWork() async -> (ReservedWork, alone: Bool)? {
        await withCheckedContinuation { continuation in
            switch machine.withLock({ $0.inlineReady(continuation) }) {
            case .run(let work): continuation.resume(returning: (work, false))
            case .exit: continuation.resume(returning: nil)
            case .wait: break
            }
        }
    }

    /// The next reserved message if one is waiting.
    func tryTakeWork() -> ReservedWork? {
        machine.withLock { $0.nextReserved() }
    }

    /// The delivery tags this worker answers for in `unacked`.
    package var holdingTags: Set<String> { machine.withLock { $0.holding } }

    /// Holds a message until its ETA; false when it must be given back (stopping).
    func holdUntilDue(_ delivery: Delivery, eta: CeleryTimestamp) -> Bool {
        switch machine.withLock({ $0.hold(delivery, until: eta) }) {
        case .restore:
            return false
        case .held(let earliest, let wake):
            resume(wake)
            // The timer sleeps until the earliest due time: a new earliest one wakes it.
            if earliest { dueTimer.signal() }
            return true
        }
    }

    /// Holds a message until its rate-limit slot; false when it must be given back (stopping).
    func holdRateLimited(_ entry: Machine.RateLimited) -> Bool {
        guard let earliest = machine.withLock({ $0.holdRateLimited(entry) }) else { return false }
        if earliest { dueTimer.signal() }
        return true
    }

    /// Until shutdown: moves held messages whose ETA has come, and rate-limited ones whose slot has come, to the
    /// executors; sleeps until the next is due (at most 1 s for ETAs, so a change of the system clock is noticed).
    func dueLoop() async {
        while !isStopping {
            let (held, limited, nextHeld, nextLimited) = machine.withLock {
                $0.takeDue(now: CeleryTimestamp.now(), instant: .now)
            }
            for entry in held {
                let message: TaskMessage
                do {
                    message = try Self.decodeHeld(entry.delivery, bodyLimit: bodyLimit)
                } catch {
                    // It decoded when it was held; reject it as any undecodable message.
                    await reject(entry.delivery, error)
                    finished(keepsCredit: entry.keepsCredit)
                    continue
                }
                await reserve(.due(entry.delivery, message, keepsCredit: entry.keepsCredit))
            }
            for entry in limited { await reserve(entry.work) }
            var pause: Duration? = nil
            if let nextHeld {
                let seconds = min(1, max(0, nextHeld.secondsSince1970 - CeleryTimestamp.now().secondsSince1970))
                pause = .microseconds(Int64(seconds * 1e6))
            }
            if let nextLimited {
                let wait = max(nextLimited - .now, .zero)
                pause = min(pause ?? wait, wait)
            }
            // Nothing held: until a message is held (`hold` signals) or shutdown.
            await dueTimer.wait(for: pause)
        }
    }

    /// The message in a held delivery, acked under the tag it was recorded with (as when it was first decoded).
    static func decodeHeld(_ delivery: Delivery, bodyLimit: Int) throws(TaskMessageError) -> TaskMessage {
        var message = try TaskMessage(envelope: delivery.envelope, bodyLimit: bodyLimit)
        if let recorded = delivery.tag { message.deliveryTag = recorded }
        return message
    }

    /// The held messages and their ETAs, earliest first (for `celery inspect scheduled`).
    package var scheduledMessages: [(due: CeleryTimestamp, message: TaskMessage)] {
        machine.withLock { $0.heldMessages }.compactMap { entry in
            (try? Self.decodeHeld(entry.delivery, bodyLimit: bodyLimit)).map { (entry.due, $0) }
        }
    }
}
