import CeleryProtocol
import CeleryRedis
import Redis
import Synchronization

/// ETA messages parked in Redis (docs/guarantees.md, "ETA and countdown"). A message due within
/// ``WorkerConfiguration/parkETAAfter`` is held in memory as Celery holds it; one due later, or any while
/// ``WorkerConfiguration/maximumHeld`` messages are already held, leaves `unacked` for its queue's parked set, so
/// neither memory nor prefetch credit is spent on it. Each worker moves the parked messages of its queues back to
/// their lists when they are due within half the window: whichever worker pops one then holds it until its ETA.
extension Worker {
    /// How many parked messages one unpark step moves from each queue's set.
    static let unparkLimit = 1000
    /// At most this many parked messages are listed by `celery inspect scheduled` (each worker of the queue lists
    /// them).
    static let maximumParkedReported = 1000
    /// `celery inspect query_task` looks for at most this many ids in the parked sets (each is a scan of them).
    static let maximumParkedLookups = 20

    /// Whether a message due at `eta` goes to Redis rather than into memory.
    func shouldPark(_ eta: CeleryTimestamp) -> Bool {
        guard let window = configuration.parkETAAfter else { return false }
        if eta.secondsSince1970 - CeleryTimestamp.now().secondsSince1970 > window.seconds { return true }
        return machine.withLock { $0.heldCount } >= configuration.maximumHeld
    }

    /// Parks a fetched ETA message; true when it left this worker (parked, or given back by a visibility restore
    /// meanwhile), false when Redis refused and it must be held here instead. Executors parking at the same time
    /// share one script call (``ParkingQueue``).
    func park(_ delivery: Delivery, _ message: TaskMessage, eta: CeleryTimestamp) async -> Bool {
        let tag = delivery.tag ?? message.deliveryTag
        let parked = await parking.park(
            ParkedMessage(tag: tag, list: delivery.list, envelope: delivery.envelope, due: eta.secondsSince1970),
            through: broker
        )
        guard parked else {
            logger.warning(
                "cannot park an ETA message in Redis; holding it in memory",
                metadata: ["celery.task_id": "\(message.id)"]
            )
            return false
        }
        machine.withLock { $0.acknowledged(tag) }
        metrics.parked()
        return true
    }

    /// Until shutdown: moves this worker's queues' parked messages that are due within half the window back to
    /// their lists (only the ones already due while the in-memory window is full), waking when the earliest
    /// is due and at least every second (another worker may park an earlier one).
    func unparkLoop() async {
        guard let window = configuration.parkETAAfter else { return }
        let lead = window.seconds / 2
        var failures = 0
        while !isStopping {
            let full = machine.withLock { $0.heldCount } >= configuration.maximumHeld
            let now = CeleryTimestamp.now().secondsSince1970
            var pause = Duration.seconds(1)
            do {
                let step = try await broker.unpark(
                    queues: control.queues.current,
                    until: now + (full ? 0 : lead),
                    limit: Self.unparkLimit
                )
                if failures > 0 {
                    logger.info("moving parked ETA messages again")
                    failures = 0
                }
                if step.moved > 0 { metrics.unparked(step.moved) }
                if step.more {
                    pause = .zero
                } else if let earliest = step.earliest {
                    let wait = min(1, max(0, earliest - lead - CeleryTimestamp.now().secondsSince1970))
                    pause = .microseconds(Int64(wait * 1e6))
                }
            } catch {
                failures += 1
                pause = RedisBackoff(initial: .milliseconds(100), maximum: .seconds(5)).delay(afterFailures: failures)
                if failures == 1 {
                    logger.error("cannot move parked ETA messages, retrying", metadata: ["error": "\(error)"])
                }
            }
            if pause > .zero { await unparkStop.wait(for: pause) }
        }
    }
}

/// Parks messages in batches: the first executor to park while no batch is on its way sends every message waiting
/// (its own and those added meanwhile) in one script call, and again while more are waiting; the others wait for
/// their batch's reply. Under a flood of ETA messages each executor still waits for its own message to be parked.
package final class ParkingQueue: Sendable {
    private struct State {
        var waiting: [(ParkedMessage, CheckedContinuation<Bool, Never>)] = []
        var sending = false
    }

    private let state = Mutex(State())
    /// The most messages one script call parks.
    static let batchLimit = 500

    package init() {}

    /// True once parked (or no longer in `unacked`), false when Redis failed.
    package func park(_ message: ParkedMessage, through broker: any Broker) async -> Bool {
        await withCheckedContinuation { continuation in
            let leads = state.withLock { state in
                state.waiting.append((message, continuation))
                defer { state.sending = true }
                return !state.sending
            }
            guard leads else { return }
            Task { await self.send(through: broker) }
        }
    }

    private func send(through broker: any Broker) async {
        while true {
            let batch = state.withLock { state in
                let batch = Array(state.waiting.prefix(Self.batchLimit))
                state.waiting.removeFirst(batch.count)
                if batch.isEmpty { state.sending = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            let parked = (try? await broker.park(batch.map(\.0))) != nil
            for (_, continuation) in batch { continuation.resume(returning: parked) }
        }
    }
}
