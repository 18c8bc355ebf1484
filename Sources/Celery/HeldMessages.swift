import HeapModule
import JSON
import Synchronization

/// Messages with an ETA in the future, held in memory (and in `unacked`) until due, then handed to executors.
final class HeldMessages: Sendable {
    private struct Entry: Comparable {
        static func < (lhs: Entry, rhs: Entry) -> Bool { lhs.due < rhs.due }
        static func == (lhs: Entry, rhs: Entry) -> Bool { lhs.due == rhs.due }

        var due: CeleryTimestamp
        var delivery: Delivery
        var message: TaskMessage
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

    var count: Int { state.withLock { $0.entries.count } }

    /// The held messages and their ETAs, earliest first (for `celery inspect scheduled`).
    var snapshot: [(due: CeleryTimestamp, message: TaskMessage)] {
        state.withLock { $0.entries.unordered.sorted().map { ($0.due, $0.message) } }
    }

    /// Holds a message; false once closed (the caller then restores it).
    @discardableResult
    /// Holds a message until `due`. Up to `creditFree` held messages give their prefetch credit back, so the
    /// worker keeps fetching past them (Celery raises its prefetch count for ETA tasks without limit); past that
    /// a held message keeps its credit, so fetching stops and memory stays bounded.
    /// Returns nil once closed (the caller restores the message), else whether the message keeps its credit.
    func hold(_ delivery: Delivery, _ message: TaskMessage, until due: CeleryTimestamp, creditFree: Int) -> Bool? {
        state.withLock { state in
            guard !state.closed else { return nil }
            let keepsCredit = state.creditFree >= creditFree
            if !keepsCredit { state.creditFree += 1 }
            state.entries.insert(Entry(due: due, delivery: delivery, message: message, keepsCredit: keepsCredit))
            return keepsCredit
        }
    }

    /// Moves due messages to the reserved queue every 10 ms until closed.
    func run(worker: Worker) async {
        while true {
            let (due, closed) = state.withLock { state -> ([Entry], Bool) in
                guard !state.closed else { return ([], true) }
                let now = CeleryTimestamp.now()
                var due: [Entry] = []
                while let first = state.entries.min, first.due <= now {
                    due.append(state.entries.removeMin())
                    if !first.keepsCredit { state.creditFree -= 1 }
                }
                return (due, false)
            }
            // Closed, or a cold shutdown: whatever is still held is given back by the worker.
            if closed || Task.isCancelled { return }
            for entry in due
            where !worker.reserved.push(.due(entry.delivery, entry.message, keepsCredit: entry.keepsCredit)) {
                // The worker is stopping: the reserved queue closed after this list did, so restore here.
                await worker.restore(entry.delivery)
            }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Stops the timer and returns the messages still held, to be restored.
    func close() -> [Delivery] {
        state.withLock { state in
            state.closed = true
            defer { state.entries = Heap() }
            return state.entries.unordered.map(\.delivery)
        }
    }
}
