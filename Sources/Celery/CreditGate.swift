import CeleryProtocol
import CeleryRedis
import Synchronization

/// Prefetch credit: how many more messages the worker may fetch before finished tasks free room.
package final class CreditGate: Sendable {
    private struct State {
        var available: Int
        var waiter: CheckedContinuation<Int, Never>?
        var closed = false
    }

    private let state: Mutex<State>

    package init(credit: Int) {
        state = Mutex(State(available: credit))
    }

    /// Waits until some credit is free and takes all of it; 0 once closed.
    package func acquireAll() async -> Int {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Int? in
                if state.closed { return 0 }
                if state.available > 0 {
                    defer { state.available = 0 }
                    return state.available
                }
                state.waiter = continuation
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// Gives credit back (a finished task, or fetched fewer than taken).
    package func release(_ amount: Int) {
        guard amount > 0 else { return }
        let waiter = state.withLock { state -> (CheckedContinuation<Int, Never>, Int)? in
            state.available += amount
            guard let waiter = state.waiter else { return nil }
            state.waiter = nil
            defer { state.available = 0 }
            return (waiter, state.available)
        }
        if let (continuation, amount) = waiter { continuation.resume(returning: amount) }
    }

    /// Wakes a waiting fetcher with 0.
    package func close() {
        let waiter = state.withLock { state -> CheckedContinuation<Int, Never>? in
            state.closed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: 0)
    }
}
