import CeleryProtocol
import NIOCore
import NIOPosix
import Synchronization

/// A timer that can be cut short: `wait(for:)` returns after the duration, or as soon as `signal()` is called
/// (a signal with nobody waiting is kept for the next wait). The worker's timers sleep with it until their next
/// deadline instead of waking every few milliseconds to look.
package final class TimerSignal: Sendable {
    package init() {}

    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Which wait is the current one, and the last wait whose time ran out (perhaps before it began to wait).
        var generation: UInt64 = 0
        var expired: UInt64 = 0
        /// When the current wait's time runs out; nil between waits and for a wait without a time.
        var deadline: NIODeadline?
        /// The one timer armed (its number, when it fires, its task), left armed when a wait ends early.
        var armed: (number: UInt64, at: NIODeadline, task: Scheduled<Void>)?
        /// Timers armed so far.
        var timers: UInt64 = 0
    }

    private let state = Mutex(State())

    /// How many timers the waits armed so far (a wait ended early leaves its timer for the next wait).
    package var timersArmed: UInt64 { state.withLock { $0.timers } }

    /// Waits up to `duration` (nil: until signalled).
    package func wait(for duration: Duration?) async {
        let deadline = duration.map { NIODeadline.now() + TimeAmount($0) }
        let (generation, replaced) = state.withLock { state -> (UInt64, Scheduled<Void>?) in
            state.generation &+= 1
            state.deadline = deadline
            // A timer still armed from an earlier wait that fires first serves this one too: when it fires it
            // arms another for the rest. Only a wait that ends sooner arms a timer of its own.
            guard let deadline, state.armed.map({ $0.at > deadline }) ?? true else { return (state.generation, nil) }
            let replaced = state.armed?.task
            arm(&state, at: deadline)
            return (state.generation, replaced)
        }
        replaced?.cancel()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.pending || state.expired == generation {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            self.signal()
        }
        state.withLock { state in
            if state.generation == generation { state.deadline = nil }
        }
    }

    /// Arms a timer for `deadline`: a NIO scheduled task, not a sleeping Swift task. Arming it wakes no other
    /// thread when the wait runs on an event loop (and only that loop's thread otherwise), where a task sleeping
    /// in `Task.sleep` costs a hand-off to a pool thread and to the timer thread at each end.
    private func arm(_ state: inout State, at deadline: NIODeadline) {
        state.timers &+= 1
        let number = state.timers
        let task = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(deadline: deadline) {
            self.fire(number)
        }
        state.armed = (number, deadline, task)
    }

    /// Timer `number` fired: ends the current wait if its time ran out, or arms a timer for the rest of it.
    private func fire(_ number: UInt64) {
        let now = NIODeadline.now()
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            // A timer that a sooner one replaced (its cancellation came too late) does nothing.
            guard state.armed?.number == number else { return nil }
            state.armed = nil
            guard let deadline = state.deadline else { return nil }
            if deadline > now {
                arm(&state, at: deadline)
                return nil
            }
            state.expired = state.generation
            state.deadline = nil
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Forgets a signal given while nobody waited.
    package func discardPending() {
        state.withLock { $0.pending = false }
    }

    /// Ends the current wait, or the next one if nobody waits.
    package func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }
}
