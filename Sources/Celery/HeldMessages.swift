import JSON
import Synchronization

/// Messages with an ETA in the future, held in memory (and in `unacked`) until due, then handed to executors.
final class HeldMessages: Sendable {
    private struct Entry {
        var due: CeleryTimestamp
        var delivery: Delivery
        var message: TaskMessage
    }

    private struct State {
        var entries: [Entry] = []
        var closed = false
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.entries.count } }

    /// Holds a message; false once closed (the caller then restores it).
    @discardableResult
    func hold(_ delivery: Delivery, _ message: TaskMessage, until due: CeleryTimestamp) -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.entries.append(Entry(due: due, delivery: delivery, message: message))
            return true
        }
    }

    /// Moves due messages to the reserved queue every 10 ms until closed.
    func run(worker: Worker) async {
        while true {
            let (due, closed) = state.withLock { state -> ([Entry], Bool) in
                guard !state.closed else { return ([], true) }
                let now = CeleryTimestamp.now()
                let due = state.entries.filter { $0.due <= now }
                if !due.isEmpty { state.entries.removeAll { $0.due <= now } }
                return (due, false)
            }
            if closed { return }
            for entry in due where !worker.reserved.push(.due(entry.delivery, entry.message)) {
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
            defer { state.entries.removeAll() }
            return state.entries.map(\.delivery)
        }
    }
}
