import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The life of a fetched message as one value: credit, reserved / held / rate-limited messages, the tags in
/// `unacked`, shutdown. No Redis, no tasks, no sleeping: waiters are numbers and time is given.
@Suite("Worker state machine")
struct WorkerStateMachineTests {
    typealias Machine = WorkerStateMachine<Int, Int, Int>

    static func delivery(_ tag: String) -> Delivery {
        Delivery(list: "q", envelope: Array(tag.utf8), tag: tag)
    }

    static func message(_ id: String) throws -> TaskMessage {
        try TaskMessage(envelope: TestRedis.envelope(task: "tasks.add", id: id, args: [1, 2], queue: "q").bytes)
    }

    static func tag(_ handover: Machine.Handover) -> String? {
        switch handover {
        case .queued, .restore: nil
        case .executor(_, let work), .inline(_, let work, _): work.delivery.tag
        }
    }

    // MARK: - Reserved messages and the executors

    @Test func aLoneMessageGoesToTheInlineExecutorWhenEveryOtherWaits() {
        var machine = Machine(credit: 8, otherExecutors: 2, maximumCreditFreeHeld: 0)
        guard case .fetch(8) = machine.requestCredit(100) else {
            Issue.record("no credit")
            return
        }
        guard case .wait = machine.executorReady(1), case .wait = machine.executorReady(2),
            case .wait = machine.inlineReady(3)
        else {
            Issue.record("an executor got work")
            return
        }
        let (handovers, wake) = machine.fetched([Self.delivery("a")], taken: 8)
        #expect(wake == nil)
        #expect(machine.credit == 7)
        guard case .inline(3, let work, alone: true)? = handovers.first else {
            Issue.record("not inline: \(handovers)")
            return
        }
        #expect(work.delivery.tag == "a")
        #expect(machine.holding == ["a"])
        let closed = machine.close()
        #expect(closed.giveBack.isEmpty && closed.executors == [1, 2] && closed.inline == nil)
    }

    @Test func aMessageThatMayNotRunInlineGoesToAnotherExecutor() {
        var machine = Machine(credit: 4, otherExecutors: 1, maximumCreditFreeHeld: 0)
        _ = machine.executorReady(1)
        _ = machine.inlineReady(2)
        guard case .executor(1, let work) = machine.reserve(.fetched(Self.delivery("b"))) else {
            Issue.record("not handed to the waiting executor")
            return
        }
        #expect(work.delivery.tag == "b")
        #expect(machine.close().inline == 2)
    }

    @Test func whileAnotherExecutorIsBusyTheMessageGoesToAWaitingOneThenInlineNotAlone() {
        // Two others: one waits, one is busy.
        var machine = Machine(credit: 4, otherExecutors: 2, maximumCreditFreeHeld: 0)
        _ = machine.executorReady(1)
        _ = machine.inlineReady(3)
        guard case .executor(1, _) = machine.reserve(.fetched(Self.delivery("c")), mayRunInline: true) else {
            Issue.record("not handed to the waiting executor")
            return
        }
        guard case .inline(3, _, alone: false) = machine.reserve(.fetched(Self.delivery("d")), mayRunInline: true)
        else {
            Issue.record("not handed to the inline executor as not alone")
            return
        }
    }

    @Test func queuedMessagesAreTakenInOrderAndNeverAlone() {
        var machine = Machine(credit: 4, otherExecutors: 0, maximumCreditFreeHeld: 0)
        let (handovers, _) = machine.fetched([Self.delivery("e"), Self.delivery("f")], taken: 4)
        #expect(handovers.allSatisfy { if case .queued = $0 { true } else { false } })
        guard case .run(let first) = machine.inlineReady(1) else {
            Issue.record("nothing to run")
            return
        }
        #expect(first.delivery.tag == "e")
        #expect(machine.nextReserved()?.delivery.tag == "f")
        #expect(machine.nextReserved() == nil)
        #expect(machine.close().giveBack.isEmpty)
        guard case .restore(let back) = machine.reserve(.fetched(Self.delivery("g"))) else {
            Issue.record("a closed machine took a message")
            return
        }
        #expect(back.tag == "g")
        guard case .exit = machine.inlineReady(1) else {
            Issue.record("an executor was not told to exit")
            return
        }
    }

    // MARK: - Credit

    @Test func creditTakenIsAllCreditAndComesBackToTheWaitingFetchLoop() {
        var machine = Machine(credit: 3, otherExecutors: 0, maximumCreditFreeHeld: 0)
        #expect(machine.requestCredit(1) == .fetch(3))
        let (_, unused) = machine.fetched([Self.delivery("a"), Self.delivery("b"), Self.delivery("c")], taken: 3)
        #expect(unused == nil)
        #expect(machine.requestCredit(1) == .wait)
        // A finished task frees its credit: the waiting fetch loop takes it.
        let wake = machine.finished(keepsCredit: true)
        #expect(wake?.waiter == 1 && wake?.credit == 1)
        #expect(machine.credit == 0)
        #expect(machine.finished(keepsCredit: false) == nil)
        #expect(machine.releaseCredit(0) == nil)
    }

    /// A seeded random run of fetches, executions, ETA holds, rate limits and acks: at every step the free credit
    /// plus the credit held by messages equals the prefetch count, and at the end every message is accounted for.
    @Test(arguments: [1, 2, 3, 42, 1234])
    func creditNeverLeaks(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        let prefetch = 6
        var machine = Machine(credit: prefetch, otherExecutors: 0, maximumCreditFreeHeld: 2)
        // Messages holding credit: reserved or running (`keeps`), held with credit, rate-limited with credit.
        var running: [(tag: String, keepsCredit: Bool)] = []
        var heldWithCredit = Set<String>()
        var next = 0
        var acked = 0
        var now = CeleryTimestamp(secondsSince1970: 1000)
        let start = ContinuousClock.now
        var instant = start
        func holdingCredit() -> Int {
            let reserved = machine.reservedWork.filter {
                switch $0 {
                case .fetched: true
                case .due(_, _, let keeps), .admitted(_, _, let keeps): keeps
                }
            }.count
            let limited = machine.rateLimitedMessages.filter(\.keepsCredit).count
            return running.filter(\.keepsCredit).count + reserved + heldWithCredit.count + limited
        }
        for _ in 0..<400 {
            switch Int.random(in: 0..<6, using: &random) {
            case 0:  // fetch
                // (The fetch loop asks only when it does not already wait; here it never waits.)
                if machine.credit > 0, case .fetch(let credit) = machine.requestCredit(0) {
                    let count = Int.random(in: 0...credit, using: &random)
                    let deliveries = (0..<count).map { _ in
                        next += 1
                        return Self.delivery("m\(next)")
                    }
                    let (_, wake) = machine.fetched(deliveries, taken: credit)
                    #expect(wake == nil)
                }
            case 1:  // an executor takes a reserved message
                if let work = machine.nextReserved() {
                    switch work {
                    case .fetched(let delivery):
                        // Some go on hold for an ETA, some wait for a rate-limit slot, most run.
                        switch Int.random(in: 0..<4, using: &random) {
                        case 0:
                            if case .held(_, _) = machine.hold(
                                delivery,
                                until: CeleryTimestamp(secondsSince1970: now.secondsSince1970 + 5)
                            ) {
                                let keeps =
                                    machine.heldMessages.first { $0.delivery.tag == delivery.tag }?.keepsCredit ?? false
                                if keeps { heldWithCredit.insert(delivery.tag!) }
                            }
                        case 1:
                            let entry = Machine.RateLimited(
                                due: instant + .seconds(2),
                                delivery: delivery,
                                message: try! Self.message(delivery.tag!),
                                keepsCredit: true,
                                admitted: true
                            )
                            _ = machine.holdRateLimited(entry)
                        default:
                            running.append((delivery.tag!, true))
                        }
                    case .due(let delivery, _, let keeps), .admitted(let delivery, _, let keeps):
                        running.append((delivery.tag!, keeps))
                    }
                }
            case 2, 3:  // a running task finishes and is acked
                if !running.isEmpty {
                    let task = running.remove(at: Int.random(in: 0..<running.count, using: &random))
                    machine.acknowledged(task.tag)
                    _ = machine.finished(keepsCredit: task.keepsCredit)
                    acked += 1
                }
            case 4:  // time passes
                now = CeleryTimestamp(secondsSince1970: now.secondsSince1970 + 3)
                instant += .seconds(3)
                let due = machine.takeDue(now: now, instant: instant)
                for entry in due.held {
                    heldWithCredit.remove(entry.delivery.tag!)
                    _ = machine.reserve(.due(entry.delivery, try! Self.message("x"), keepsCredit: entry.keepsCredit))
                }
                for entry in due.rateLimited { _ = machine.reserve(entry.work) }
            default:
                break
            }
            #expect(machine.credit + holdingCredit() == prefetch, "seed \(seed)")
        }
        // Shutdown: what did not start comes back, what runs finishes; nothing is lost or counted twice.
        #expect(machine.stop() == nil)
        let closed = machine.close()
        for task in running {
            machine.acknowledged(task.tag)
            _ = machine.finished(keepsCredit: task.keepsCredit)
            acked += 1
        }
        #expect(acked + closed.giveBack.count == next)
        #expect(Set(closed.giveBack.compactMap(\.tag)).count == closed.giveBack.count)
        #expect(machine.holding.isEmpty)
    }

    // MARK: - ETA

    @Test func heldMessagesGiveTheirCreditBackUpToTheLimitThenKeepIt() throws {
        var machine = Machine(credit: 2, otherExecutors: 0, maximumCreditFreeHeld: 1)
        #expect(machine.requestCredit(9) == .fetch(2))
        _ = machine.fetched([Self.delivery("e1"), Self.delivery("e2")], taken: 2)
        let base = CeleryTimestamp(secondsSince1970: 5000)
        _ = machine.nextReserved()
        _ = machine.nextReserved()
        guard
            case .held(earliest: true, wake: nil) = machine.hold(
                Self.delivery("e1"),
                until: CeleryTimestamp(secondsSince1970: base.secondsSince1970 + 10)
            )
        else {
            Issue.record("the first hold did not give its credit back")
            return
        }
        #expect(machine.credit == 1)
        // Past the limit: keeps its credit; an earlier ETA is the new earliest.
        guard
            case .held(earliest: true, wake: nil) = machine.hold(
                Self.delivery("e2"),
                until: CeleryTimestamp(secondsSince1970: base.secondsSince1970 + 5)
            )
        else {
            Issue.record("the second hold gave credit back")
            return
        }
        #expect(machine.credit == 1)
        #expect(machine.heldMessages.map(\.delivery.tag) == ["e2", "e1"])
        // Not yet due.
        #expect(machine.takeDue(now: base, instant: .now).held.isEmpty)
        let due = machine.takeDue(now: CeleryTimestamp(secondsSince1970: base.secondsSince1970 + 6), instant: .now)
        #expect(due.held.map(\.delivery.tag) == ["e2"] && due.held[0].keepsCredit)
        #expect(due.nextHeld == CeleryTimestamp(secondsSince1970: base.secondsSince1970 + 10))
        // e2 runs with its credit; e1, credit-free, runs without taking any.
        _ = machine.reserve(.due(due.held[0].delivery, try Self.message("e2"), keepsCredit: true))
        let later = machine.takeDue(now: CeleryTimestamp(secondsSince1970: base.secondsSince1970 + 11), instant: .now)
        #expect(later.held.map(\.keepsCredit) == [false])
        #expect(machine.heldCount == 0)
        // A new hold may give credit back again: the credit-free count went down when e1 came due.
        _ = machine.nextReserved()
        guard
            case .held(_, wake: nil) = machine.hold(
                Self.delivery("e3"),
                until: CeleryTimestamp(secondsSince1970: base.secondsSince1970 + 99)
            )
        else {
            Issue.record("not held")
            return
        }
        #expect(machine.credit == 2)
    }

    // MARK: - Rate limits

    @Test func rateLimitedMessagesComeBackAtTheirSlotAdmittedOrNot() throws {
        var machine = Machine(credit: 4, otherExecutors: 0, maximumCreditFreeHeld: 0)
        let start = ContinuousClock.now
        let late = Machine.RateLimited(
            due: start + .seconds(2),
            delivery: Self.delivery("r1"),
            message: try Self.message("r1"),
            keepsCredit: true,
            admitted: true
        )
        let early = Machine.RateLimited(
            due: start + .seconds(1),
            delivery: Self.delivery("r2"),
            message: try Self.message("r2"),
            keepsCredit: true,
            admitted: false
        )
        #expect(machine.holdRateLimited(late) == true)
        #expect(machine.holdRateLimited(early) == true)
        let due = machine.takeDue(now: CeleryTimestamp.now(), instant: start + .milliseconds(1500))
        #expect(due.rateLimited.map(\.delivery.tag) == ["r2"])
        #expect(due.nextRateLimited == start + .seconds(2))
        guard case .due = due.rateLimited[0].work else {
            Issue.record("a message whose slot was not reserved must ask the limiter again")
            return
        }
        guard case .admitted = late.work else {
            Issue.record("an admitted message must not ask again")
            return
        }
    }

    // MARK: - Shutdown

    @Test func aWarmShutdownStopsFetchingAndCloseGivesBackExactlyWhatDidNotStart() throws {
        var machine = Machine(credit: 5, otherExecutors: 0, maximumCreditFreeHeld: 0)
        #expect(machine.requestCredit(1) == .fetch(5))
        _ = machine.fetched((1...5).map { Self.delivery("s\($0)") }, taken: 5)
        // s1 runs, s2 is held, s3 waits for a slot, s4 and s5 stay reserved.
        _ = machine.nextReserved()
        _ = machine.nextReserved()
        _ = machine.nextReserved()
        _ = machine.hold(Self.delivery("s2"), until: CeleryTimestamp(secondsSince1970: 9e9))
        _ = machine.holdRateLimited(
            Machine.RateLimited(
                due: .now + .seconds(60),
                delivery: Self.delivery("s3"),
                message: try Self.message("s3"),
                keepsCredit: true,
                admitted: true
            )
        )
        #expect(machine.requestCredit(7) == .wait)
        #expect(machine.stop() == 7)
        #expect(machine.phase == .draining)
        #expect(machine.requestCredit(7) == .stop)
        guard case .exit = machine.executorReady(1) else {
            Issue.record("an executor took work while draining")
            return
        }
        // A message due while draining stays reserved for close().
        guard case .queued = machine.reserve(.fetched(Self.delivery("s6"))) else {
            Issue.record("not queued while draining")
            return
        }
        guard case .restore = machine.hold(Self.delivery("s7"), until: CeleryTimestamp.now()) else {
            Issue.record("held while draining")
            return
        }
        let closed = machine.close()
        #expect(closed.giveBack.compactMap(\.tag) == ["s2", "s3", "s4", "s5", "s6"])
        #expect(machine.phase == .closed)
        // s1 was running: its tag stays held until it is acked.
        #expect(machine.holding == ["s1"])
        machine.acknowledged("s1")
        #expect(machine.holding.isEmpty)
    }

    @Test func aMessageTakenDuringACancelledShutdownGoesBackAfterTheExecutorsEnd() {
        var machine = Machine(credit: 2, otherExecutors: 0, maximumCreditFreeHeld: 0)
        _ = machine.fetched([Self.delivery("u1"), Self.delivery("u2")], taken: 2)
        let work = machine.nextReserved()!
        machine.notStarted(work)
        let closed = machine.close()
        #expect(closed.giveBack.compactMap(\.tag) == ["u2"])
        #expect(machine.takeUnstarted().compactMap(\.tag) == ["u1"])
        #expect(machine.takeUnstarted().isEmpty)
        #expect(machine.holding.isEmpty)
    }
}

/// SplitMix64: a repeatable sequence for the randomized suite.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
