import CeleryProtocol
import CeleryRedis
import HeapModule
import JSON
import Synchronization

/// Messages with an ETA in the future, held in memory (and in `unacked`) until due, then handed to executors.
///
/// Only the envelope is kept (about 1 KiB for a small task), not the decoded message: it is decoded again when due,
/// or when `celery inspect scheduled` asks.
package final class HeldMessages: Sendable {
    private struct Entry: Comparable {
        static func < (lhs: Entry, rhs: Entry) -> Bool { lhs.due < rhs.due }
        static func == (lhs: Entry, rhs: Entry) -> Bool { lhs.due == rhs.due }

        var due: CeleryTimestamp
        var delivery: Delivery
        /// Whether this message still holds a prefetch credit (held past the limit of credit-free holds).
        var keepsCredit: Bool
    }

    private struct State {
        /// Earliest due first.
        var entries = Heap<Entry>()
        /// Entries that gave their credit back.
        var creditFree = 0
        var closed = false
    }

    private let state = Mutex(State())
    private let timer = TimerSignal()

    package var count: Int { state.withLock { $0.entries.count } }

    /// The held messages and their ETAs, earliest first (for `celery inspect scheduled`).
    package var snapshot: [(due: CeleryTimestamp, message: TaskMessage)] {
        let entries = state.withLock { $0.entries.unordered.sorted() }
        return entries.compactMap { entry in
            (try? Self.decode(entry.delivery)).map { (entry.due, $0) }
        }
    }

    /// The message in a held delivery, acked under the tag it was recorded with (as when it was first decoded).
    private static func decode(_ delivery: Delivery) throws(TaskMessageError) -> TaskMessage {
        var message = try TaskMessage(envelope: delivery.envelope)
        if let recorded = delivery.tag { message.deliveryTag = recorded }
        return message
    }

    /// Holds a message until `due`. Up to `creditFree` held messages give their prefetch credit back, so the
    /// worker keeps fetching past them (Celery raises its prefetch count for ETA tasks without limit); past that
    /// a held message keeps its credit, so fetching stops and memory stays bounded.
    /// Returns nil once closed (the caller restores the message), else whether the message keeps its credit.
    package func hold(_ delivery: Delivery, until due: CeleryTimestamp, creditFree: Int) -> Bool? {
        let (keepsCredit, earliest) = state.withLock { state -> (Bool?, Bool) in
            guard !state.closed else { return (nil, false) }
            let keepsCredit = state.creditFree >= creditFree
            if !keepsCredit { state.creditFree += 1 }
            let earliest = state.entries.min.map { due < $0.due } ?? true
            state.entries.insert(Entry(due: due, delivery: delivery, keepsCredit: keepsCredit))
            return (keepsCredit, earliest)
        }
        // The timer sleeps until the earliest ETA: a new earliest one wakes it.
        if earliest { timer.signal() }
        return keepsCredit
    }

    /// Moves due messages to the reserved queue until closed, sleeping until the next ETA (at most 1 s, so a
    /// change of the system clock is noticed).
    package func run(worker: Worker) async {
        while true {
            let (due, closed, next) = state.withLock { state -> ([Entry], Bool, CeleryTimestamp?) in
                guard !state.closed else { return ([], true, nil) }
                let now = CeleryTimestamp.now()
                var due: [Entry] = []
                while let first = state.entries.min, first.due <= now {
                    due.append(state.entries.removeMin())
                    if !first.keepsCredit { state.creditFree -= 1 }
                }
                return (due, false, state.entries.min?.due)
            }
            // Closed, or a cold shutdown: whatever is still held is given back by the worker.
            if closed || Task.isCancelled { return }
            for entry in due {
                let message: TaskMessage
                do {
                    message = try Self.decode(entry.delivery)
                } catch {
                    // It decoded when it was held; reject it as any undecodable message.
                    await worker.reject(entry.delivery, error)
                    if entry.keepsCredit { worker.gate.release(1) }
                    continue
                }
                if !worker.reserved.push(.due(entry.delivery, message, keepsCredit: entry.keepsCredit)) {
                    // The worker is stopping: the reserved queue closed after this list did, so restore here.
                    await worker.restore(entry.delivery)
                }
            }
            let pause = next.map { next -> Duration in
                let seconds = min(1, max(0, next.secondsSince1970 - CeleryTimestamp.now().secondsSince1970))
                return .microseconds(Int64(seconds * 1e6))
            }
            await timer.wait(for: pause ?? .seconds(1))
        }
    }

    /// Stops the timer and returns the messages still held, to be restored.
    package func close() -> [Delivery] {
        defer { timer.signal() }
        return state.withLock { state in
            state.closed = true
            defer { state.entries = Heap() }
            return state.entries.unordered.map(\.delivery)
        }
    }
}
