import CeleryProtocol
import CeleryRedis
import DequeModule
import HeapModule

/// A message fetched and recorded in `unacked` that has not started, as an executor takes it.
package enum ReservedWork: Sendable {
    /// Freshly fetched; finishing it frees one prefetch credit.
    case fetched(Delivery)
    /// An ETA message whose time has come; `keepsCredit` when it held its prefetch credit while waiting.
    case due(Delivery, TaskMessage, keepsCredit: Bool)
    /// A message whose rate-limit slot has come: it runs without asking the rate limiter again.
    case admitted(Delivery, TaskMessage, keepsCredit: Bool)

    /// The message as fetched, to give back.
    package var delivery: Delivery {
        switch self {
        case .fetched(let delivery), .due(let delivery, _, _), .admitted(let delivery, _, _): delivery
        }
    }
}

/// The life of every message a worker fetched, from the pop to its ack or its return to the queue, in one value.
///
/// It owns the prefetch credit, the reserved messages (fetched, not started), the held ones (an ETA in the
/// future), the rate-limited ones (waiting for their slot), the delivery tags in `unacked` this worker answers for,
/// and the shutdown phase. Each event returns what the driver (``Worker``) must do: fetch this many, hand this
/// message to that executor, give these back, wake the timer. The driver keeps it behind one lock, carries the
/// actions out after releasing it, and holds no other state about messages, so credit is counted in one place:
/// every fetched message frees its credit exactly once (when it finishes, is rejected, or gives its credit back
/// while held), and on shutdown `close()` returns exactly the messages that did not start.
///
/// The waiters are the driver's continuations (plain values in unit tests): `ExecutorWaiter` for executors taking
/// work, `InlineWaiter` for the one executor on the event loop, `CreditWaiter` for the fetch loop.
package struct WorkerStateMachine<ExecutorWaiter: Sendable, InlineWaiter: Sendable, CreditWaiter: Sendable>: Sendable {
    package enum Phase: Sendable, Equatable {
        /// Fetching and running.
        case running
        /// A warm shutdown began: no credit is handed out, executors take no new work, timers stop moving messages.
        case draining
        /// Every message not started was handed back by `close()`.
        case closed
    }

    package struct Held: Comparable, Sendable {
        package static func < (lhs: Held, rhs: Held) -> Bool { lhs.due < rhs.due }
        package static func == (lhs: Held, rhs: Held) -> Bool { lhs.due == rhs.due }

        package var due: CeleryTimestamp
        package var delivery: Delivery
        /// Whether this message still holds a prefetch credit (held past the limit of credit-free holds).
        package var keepsCredit: Bool
    }

    package struct RateLimited: Comparable, Sendable {
        package static func < (lhs: RateLimited, rhs: RateLimited) -> Bool { lhs.due < rhs.due }
        package static func == (lhs: RateLimited, rhs: RateLimited) -> Bool { lhs.due == rhs.due }

        package var due: ContinuousClock.Instant
        package var delivery: Delivery
        package var message: TaskMessage
        package var keepsCredit: Bool
        /// False when the slot could not be reserved (Redis away): the message asks again when due.
        package var admitted: Bool

        /// The reserved work this message becomes when its slot comes.
        package var work: ReservedWork {
            admitted
                ? .admitted(delivery, message, keepsCredit: keepsCredit)
                : .due(delivery, message, keepsCredit: keepsCredit)
        }
    }

    /// Where a reserved message went.
    package enum Handover: Sendable {
        /// Queued until an executor asks.
        case queued
        /// To an executor that was waiting: resume it with the work.
        case executor(ExecutorWaiter, ReservedWork)
        /// To the event loop's executor; `alone` when every other executor was waiting and nothing else queued.
        case inline(InlineWaiter, ReservedWork, alone: Bool)
        /// Closed: the message goes back to its queue.
        case restore(Delivery)
    }

    /// What the fetch loop does when it asks for credit.
    package enum CreditAction: Equatable, Sendable {
        /// Fetch up to this many messages (all the credit there was, now taken).
        case fetch(Int)
        /// No credit: the waiter is resumed with it when some is freed.
        case wait
        /// Shutting down: fetch no more.
        case stop
    }

    /// What an executor does when it asks for work.
    package enum ExecutorAction: Sendable {
        case run(ReservedWork)
        /// Nothing reserved: the waiter is resumed by a later handover.
        case wait
        /// Shutting down: the executor ends.
        case exit
    }

    /// A credit waiter to resume, and with how much.
    package typealias CreditWake = (waiter: CreditWaiter, credit: Int)

    package private(set) var phase = Phase.running
    /// Free prefetch credit.
    package private(set) var credit: Int
    private var creditWaiter: CreditWaiter?
    private var reserved = Deque<ReservedWork>()
    private var executorWaiters = Deque<ExecutorWaiter>()
    private var inlineWaiter: InlineWaiter?
    /// How many executors ask with `executorReady` when one more asks with `inlineReady`.
    private let otherExecutors: Int
    private var held = Heap<Held>()
    /// Held messages that gave their credit back, at most `maximumCreditFreeHeld`.
    private var creditFreeHeld = 0
    private let maximumCreditFreeHeld: Int
    private var rateLimited = Heap<RateLimited>()
    /// Delivery tags of every message fetched and not yet acked or given back: their `unacked_index` scores are
    /// kept fresh, so no visibility restore takes them.
    package private(set) var holding: Set<String> = []
    /// Messages an executor took when the worker was already stopping (a cold shutdown): they go back too.
    private var unstarted: [Delivery] = []

    /// - Parameters:
    ///   - credit: the prefetch count.
    ///   - otherExecutors: how many executors call `executorReady` when one more calls `inlineReady` (0: none
    ///     waits inline); with it, a waiting count that reaches it tells an idle worker.
    ///   - maximumCreditFreeHeld: how many held ETA messages give their credit back (``WorkerConfiguration/maximumHeld``).
    package init(credit: Int, otherExecutors: Int, maximumCreditFreeHeld: Int) {
        self.credit = credit
        self.otherExecutors = otherExecutors
        self.maximumCreditFreeHeld = maximumCreditFreeHeld
    }

    // MARK: - Credit and fetching

    /// The fetch loop asks for credit: it takes all there is, or waits for some.
    package mutating func requestCredit(_ waiter: CreditWaiter) -> CreditAction {
        guard phase == .running else { return .stop }
        guard credit > 0 else {
            precondition(creditWaiter == nil, "one fetch loop")
            creditWaiter = waiter
            return .wait
        }
        defer { credit = 0 }
        return .fetch(credit)
    }

    /// Credit comes back (a finished task, or fewer messages fetched than credit taken); the fetch loop, if it
    /// waits, takes all of it.
    package mutating func releaseCredit(_ amount: Int) -> CreditWake? {
        guard amount > 0 else { return nil }
        credit += amount
        guard let waiter = creditWaiter else { return nil }
        creditWaiter = nil
        defer { credit = 0 }
        return (waiter, credit)
    }

    /// A pop brought `deliveries` with `taken` credit: the unused credit comes back, every tag is held, and each
    /// message is reserved (a lone message may run inline).
    package mutating func fetched(
        _ deliveries: [Delivery],
        taken: Int
    ) -> (handovers: [Handover], wake: CreditWake?) {
        let wake = releaseCredit(taken - deliveries.count)
        for delivery in deliveries { if let tag = delivery.tag { holding.insert(tag) } }
        let alone = deliveries.count == 1
        var handovers: [Handover] = []
        handovers.reserveCapacity(deliveries.count)
        for delivery in deliveries {
            handovers.append(reserve(.fetched(delivery), mayRunInline: alone))
        }
        return (handovers, wake)
    }

    /// A message joins the reserved ones, or goes straight to a waiting executor. `mayRunInline`: the inline
    /// executor may take it as `alone` if every other executor waits.
    package mutating func reserve(_ work: ReservedWork, mayRunInline: Bool = false) -> Handover {
        guard phase != .closed else {
            if let tag = work.delivery.tag { holding.remove(tag) }
            return .restore(work.delivery)
        }
        if phase == .running {
            if mayRunInline, executorWaiters.count == otherExecutors, let waiter = inlineWaiter {
                inlineWaiter = nil
                return .inline(waiter, work, alone: true)
            }
            if let waiter = executorWaiters.popFirst() { return .executor(waiter, work) }
            if let waiter = inlineWaiter {
                inlineWaiter = nil
                return .inline(waiter, work, alone: false)
            }
        }
        reserved.append(work)
        return .queued
    }

    // MARK: - Executors

    /// An executor asks for work.
    package mutating func executorReady(_ waiter: ExecutorWaiter) -> ExecutorAction {
        guard phase == .running else { return .exit }
        if let work = reserved.popFirst() { return .run(work) }
        executorWaiters.append(waiter)
        return .wait
    }

    /// The event loop's executor asks for work; what it gets this way is never `alone`.
    package mutating func inlineReady(_ waiter: InlineWaiter) -> ExecutorAction {
        guard phase == .running else { return .exit }
        if let work = reserved.popFirst() { return .run(work) }
        precondition(inlineWaiter == nil, "one executor waits inline")
        inlineWaiter = waiter
        return .wait
    }

    /// The next reserved message, if one is waiting and the worker is running.
    package mutating func nextReserved() -> ReservedWork? {
        guard phase == .running else { return nil }
        return reserved.popFirst()
    }

    /// An executor took `work` but the worker is stopping (cancelled): it goes back with the rest.
    package mutating func notStarted(_ work: ReservedWork) {
        unstarted.append(work.delivery)
    }

    /// A task that kept its credit has finished (acked, stored, retried or rejected).
    package mutating func finished(keepsCredit: Bool) -> CreditWake? {
        keepsCredit ? releaseCredit(1) : nil
    }

    /// The message was acked (or will be, in the next batch): its tag is no longer held.
    package mutating func acknowledged(_ tag: String) {
        holding.remove(tag)
    }

    /// The crash guard claimed a dead worker's message to fail it: held (its score refreshed) until acked.
    package mutating func claimed(_ tag: String) {
        holding.insert(tag)
    }

    /// The reserved messages, in order (for `celery inspect reserved`).
    package var reservedWork: [ReservedWork] { Array(reserved) }

    // MARK: - ETA and rate limits

    /// What became of a message held for its ETA.
    package enum HoldOutcome: Sendable {
        /// Held; `earliest` when it is now the first due (the timer must wake). `wake`: the credit it gave back.
        case held(earliest: Bool, wake: CreditWake?)
        /// Closed: give it back.
        case restore
    }

    /// Holds a message until its ETA. Up to `maximumCreditFreeHeld` held messages give their prefetch credit back,
    /// so the worker keeps fetching past them (Celery raises its prefetch count for ETA tasks without limit); past
    /// that a held message keeps its credit, so fetching stops and memory stays bounded.
    package mutating func hold(_ delivery: Delivery, until due: CeleryTimestamp) -> HoldOutcome {
        guard phase == .running else { return .restore }
        let keepsCredit = creditFreeHeld >= maximumCreditFreeHeld
        let earliest = held.min.map { due < $0.due } ?? true
        held.insert(Held(due: due, delivery: delivery, keepsCredit: keepsCredit))
        if keepsCredit { return .held(earliest: earliest, wake: nil) }
        creditFreeHeld += 1
        return .held(earliest: earliest, wake: releaseCredit(1))
    }

    /// Holds a message until its rate-limit slot; nil once stopping (give it back), else whether it is the first
    /// due.
    package mutating func holdRateLimited(_ entry: RateLimited) -> Bool? {
        guard phase == .running else { return nil }
        let earliest = rateLimited.min.map { entry.due < $0.due } ?? true
        rateLimited.insert(entry)
        return earliest
    }

    /// The held and rate-limited messages whose time has come, earliest first, and when the next ones are due.
    /// A due message that kept its credit still keeps it as reserved work; one that gave it back runs without.
    package mutating func takeDue(
        now: CeleryTimestamp,
        instant: ContinuousClock.Instant
    ) -> (
        held: [Held], rateLimited: [RateLimited], nextHeld: CeleryTimestamp?, nextRateLimited: ContinuousClock.Instant?
    ) {
        guard phase == .running else { return ([], [], nil, nil) }
        var dueHeld: [Held] = []
        while let first = held.min, first.due <= now {
            dueHeld.append(held.removeMin())
            if !first.keepsCredit { creditFreeHeld -= 1 }
        }
        var dueLimited: [RateLimited] = []
        while let first = rateLimited.min, first.due <= instant { dueLimited.append(rateLimited.removeMin()) }
        return (dueHeld, dueLimited, held.min?.due, rateLimited.min?.due)
    }

    /// The held messages, earliest first (for `celery inspect scheduled`).
    package var heldMessages: [Held] { held.unordered.sorted() }
    /// The rate-limited messages, earliest first.
    package var rateLimitedMessages: [RateLimited] { rateLimited.unordered.sorted() }
    package var heldCount: Int { held.count }

    // MARK: - Shutdown

    /// A warm shutdown begins: no more credit (a waiting fetch loop is resumed with 0), executors end once their
    /// task is done, timers stop.
    package mutating func stop() -> CreditWaiter? {
        guard phase == .running else { return nil }
        phase = .draining
        defer { creditWaiter = nil }
        return creditWaiter
    }

    /// Closes: returns the waiters to resume (executors with nothing) and every message that did not start, in
    /// fetch order as far as it is known (held, then rate-limited, then reserved), for the driver to give back.
    package mutating func close() -> (
        giveBack: [Delivery], executors: [ExecutorWaiter], inline: InlineWaiter?, credit: CreditWaiter?
    ) {
        phase = .closed
        var messages = held.unordered.map(\.delivery) + rateLimited.unordered.sorted().map(\.delivery)
        messages += reserved.map(\.delivery)
        held = Heap()
        rateLimited = Heap()
        reserved.removeAll()
        creditFreeHeld = 0
        let executors = Array(executorWaiters)
        executorWaiters.removeAll()
        defer {
            inlineWaiter = nil
            creditWaiter = nil
        }
        for delivery in messages { if let tag = delivery.tag { holding.remove(tag) } }
        return (messages, executors, inlineWaiter, creditWaiter)
    }

    /// After every executor has ended: the messages taken while stopping, to give back.
    package mutating func takeUnstarted() -> [Delivery] {
        defer { unstarted.removeAll() }
        for delivery in unstarted { if let tag = delivery.tag { holding.remove(tag) } }
        return unstarted
    }
}
