import CeleryProtocol
import CeleryRedis
import DequeModule
import Synchronization

/// Messages fetched and recorded but not yet started ("reserved" in Celery's words), handed to executor tasks
/// in FIFO order. Closing it wakes every waiting executor; what is left can be taken back for restore.
///
/// One executor may wait apart (`popInline`): it is handed a message pushed with `mayRunInline` when every other
/// executor is waiting too, so a lone message on an idle worker can run on the thread that read it.
package final class ReservedQueue<Element: Sendable>: Sendable {
    /// What the apart executor is handed: `alone` when every other executor was waiting and nothing else was
    /// reserved.
    package typealias Taken = (element: Element, alone: Bool)

    private struct State {
        var items = Deque<Element>()
        var waiters = Deque<CheckedContinuation<Element?, Never>>()
        var inlineWaiter: CheckedContinuation<Taken?, Never>?
        var closed = false
    }

    private let state = Mutex(State())
    /// How many executors wait on `pop`, besides the one on `popInline` (if any).
    private let otherExecutors: Int

    /// - Parameter otherExecutors: how many executors call `pop` when one more calls `popInline`; with it, a
    ///   waiting count that reaches it tells an idle worker.
    package init(otherExecutors: Int = 0) {
        self.otherExecutors = otherExecutors
    }

    package var count: Int { state.withLock { $0.items.count } }

    /// Executors waiting for an element (the one apart included).
    package var waiting: Int { state.withLock { $0.waiters.count + ($0.inlineWaiter == nil ? 0 : 1) } }

    /// The elements waiting, in order (for `celery inspect reserved`).
    package var snapshot: [Element] { state.withLock { Array($0.items) } }

    private enum Handover {
        case refused
        case queued
        case waiter(CheckedContinuation<Element?, Never>)
        case inline(CheckedContinuation<Taken?, Never>, alone: Bool)
    }

    /// Adds an element; false (and the element is not taken) once closed. `mayRunInline`: the `popInline` executor
    /// may take it as `alone` if every other executor is waiting (the fetch loop says so of a message that came by
    /// itself).
    @discardableResult
    package func push(_ element: Element, mayRunInline: Bool = false) -> Bool {
        let handover = state.withLock { state -> Handover in
            guard !state.closed else { return .refused }
            if mayRunInline, state.waiters.count == otherExecutors, let waiter = state.inlineWaiter {
                state.inlineWaiter = nil
                return .inline(waiter, alone: true)
            }
            if let waiter = state.waiters.popFirst() { return .waiter(waiter) }
            if let waiter = state.inlineWaiter {
                state.inlineWaiter = nil
                return .inline(waiter, alone: false)
            }
            state.items.append(element)
            return .queued
        }
        switch handover {
        case .refused: return false
        case .queued: return true
        case .waiter(let waiter): waiter.resume(returning: element)
        case .inline(let waiter, let alone): waiter.resume(returning: (element, alone))
        }
        return true
    }

    /// The next element, waiting for one; nil once closed.
    package func pop() async -> Element? {
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

    /// The next element for the one executor that waits apart, and whether it came to an otherwise idle worker;
    /// nil once closed.
    package func popInline() async -> Taken? {
        await withCheckedContinuation { continuation in
            let immediate = state.withLock { state -> Taken?? in
                if let item = state.items.popFirst() { return .some((item, false)) }
                if state.closed { return .some(nil) }
                precondition(state.inlineWaiter == nil, "one executor waits apart")
                state.inlineWaiter = continuation
                return .none
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
    }

    /// The next element if one is waiting, without waiting.
    package func tryPop() -> Element? {
        state.withLock { $0.items.popFirst() }
    }

    /// Closes the queue and returns the elements nobody took.
    package func close() -> [Element] {
        let (left, waiters, inlineWaiter) = state.withLock { state in
            state.closed = true
            let left = Array(state.items)
            state.items.removeAll()
            let waiters = state.waiters
            state.waiters.removeAll()
            defer { state.inlineWaiter = nil }
            return (left, waiters, state.inlineWaiter)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
        inlineWaiter?.resume(returning: nil)
        return left
    }
}
