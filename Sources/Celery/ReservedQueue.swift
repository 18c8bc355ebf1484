import DequeModule
import Synchronization

/// Messages fetched and recorded but not yet started ("reserved" in Celery's words), handed to executor tasks
/// in FIFO order. Closing it wakes every waiting executor; what is left can be taken back for restore.
final class ReservedQueue<Element: Sendable>: Sendable {
    private struct State {
        var items = Deque<Element>()
        var waiters = Deque<CheckedContinuation<Element?, Never>>()
        var closed = false
    }

    private let state = Mutex(State())

    var count: Int { state.withLock { $0.items.count } }

    /// The elements waiting, in order (for `celery inspect reserved`).
    var snapshot: [Element] { state.withLock { Array($0.items) } }

    /// Adds an element; false (and the element is not taken) once closed.
    @discardableResult
    func push(_ element: Element) -> Bool {
        let result = state.withLock { state -> (Bool, CheckedContinuation<Element?, Never>?) in
            guard !state.closed else { return (false, nil) }
            if let waiter = state.waiters.popFirst() { return (true, waiter) }
            state.items.append(element)
            return (true, nil)
        }
        result.1?.resume(returning: element)
        return result.0
    }

    /// The next element, waiting for one; nil once closed.
    func pop() async -> Element? {
        await withCheckedContinuation { continuation in
            let immediate = state.withLock { state -> Element?? in
                if let item = state.items.popFirst() { return .some(item) }
                if state.closed { return .some(nil) }
                state.waiters.append(continuation)
                return .none
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
    }

    /// Closes the queue and returns the elements nobody took.
    func close() -> [Element] {
        let (left, waiters) = state.withLock { state -> ([Element], Deque<CheckedContinuation<Element?, Never>>) in
            state.closed = true
            let left = Array(state.items)
            state.items.removeAll()
            let waiters = state.waiters
            state.waiters.removeAll()
            return (left, waiters)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
        return left
    }
}
