import Synchronization

/// A timer that can be cut short: `wait(for:)` returns after the duration, or as soon as `signal()` is called
/// (a signal with nobody waiting is kept for the next wait). The worker's timers sleep with it until their next
/// deadline instead of waking every few milliseconds to look.
final class TimerSignal: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    /// Waits up to `duration` (nil: until signalled).
    func wait(for duration: Duration?) async {
        await withTaskGroup(of: Void.self) { group in
            if let duration {
                group.addTask {
                    if (try? await Task.sleep(for: duration)) != nil { self.signal() }
                }
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { state -> Bool in
                        if state.pending {
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
            group.cancelAll()
        }
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
