import NIOCore
import NIOPosix
import Synchronization

/// A timer that can be cut short: `wait(for:)` returns after the duration, or as soon as `signal()` is called
/// (a signal with nobody waiting is kept for the next wait). The worker's timers sleep with it until their next
/// deadline instead of waking every few milliseconds to look.
final class TimerSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
        /// Which wait is the current one, and the last wait whose time ran out (perhaps before it began to wait).
        var generation: UInt64 = 0
        var expired: UInt64 = 0
    }

    private let state = Mutex(State())

    /// Waits up to `duration` (nil: until signalled).
    func wait(for duration: Duration?) async {
        let generation = state.withLock { state -> UInt64 in
            state.generation &+= 1
            return state.generation
        }
        // The timer is a NIO scheduled task, not a sleeping Swift task: arming and cancelling it wakes no other
        // thread when the wait runs on an event loop (and only that loop's thread otherwise), where a task
        // sleeping in `Task.sleep` costs a hand-off to a pool thread and to the timer thread at each end.
        let timer = duration.map { duration in
            MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: TimeAmount(duration)) {
                self.expire(generation)
            }
        }
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
        timer?.cancel()
    }

    /// Ends wait number `generation` if it is still the current one; a later wait is not affected.
    func expire(_ generation: UInt64) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard state.generation == generation else { return nil }
            state.expired = generation
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Forgets a signal given while nobody waited.
    func discardPending() {
        state.withLock { $0.pending = false }
    }

    /// Ends the current wait, or the next one if nobody waits.
    func signal() {
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
