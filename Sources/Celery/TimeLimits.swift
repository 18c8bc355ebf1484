import CeleryProtocol
import CeleryRedis
import JSON
import Synchronization

/// Celery's time-limit exceptions, in the module Python rebuilds them from.
package enum TimeLimitError: PythonMappedError, Sendable {
    /// The soft limit passed: the handler was cancelled and did not finish on its own.
    case soft(Double)
    /// The hard limit passed: the worker stopped waiting and freed the slot.
    case hard(Double)

    package var pythonExceptionType: String {
        switch self {
        case .soft: "SoftTimeLimitExceeded"
        case .hard: "TimeLimitExceeded"
        }
    }
    package var pythonExceptionModule: String { "billiard.exceptions" }
    package var pythonExceptionArguments: [JSONValue] {
        switch self {
        case .soft: []  // Python raises SoftTimeLimitExceeded() without arguments
        case .hard(let seconds): [.double(seconds)]
        }
    }
}

/// Runs a handler under a soft and a hard time limit.
///
/// Soft: the handler's task is cancelled (it sees `CancellationError` from `Task.sleep`, or checks
/// `Task.isCancelled`), may catch that and still return; if it throws instead, the error is
/// `SoftTimeLimitExceeded`. Hard: the worker stops waiting, fails the task with `TimeLimitExceeded` and frees the
/// slot; the handler, already cancelled, is left to end on its own — Swift cannot kill it, and a blocking handler
/// on the thread pool keeps its thread until it returns.
package enum TimeLimits {
    private final class Outcome: Sendable {
        private struct State {
            var result: Result<JSONValue, any Error>?
            var waiter: CheckedContinuation<Result<JSONValue, any Error>, Never>?
        }
        private let state = Mutex(State())
        /// Set when the soft limit cancelled the handler.
        let softFired = Atomic<Bool>(false)

        func complete(_ result: Result<JSONValue, any Error>) {
            let waiter = state.withLock { state -> CheckedContinuation<Result<JSONValue, any Error>, Never>? in
                guard state.result == nil else { return nil }
                state.result = result
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: result)
        }

        var isComplete: Bool { state.withLock { $0.result != nil } }

        func wait() async -> Result<JSONValue, any Error> {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Result<JSONValue, any Error>? in
                    if let result = state.result { return result }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }

    package static func run(
        soft: Duration?,
        hard: Duration?,
        termination: TaskTermination? = nil,
        _ body: @escaping @Sendable () async throws -> JSONValue
    ) async throws -> JSONValue {
        guard soft != nil || hard != nil || termination != nil else { return try await body() }
        let outcome = Outcome()
        @Sendable func runBody() async {
            do {
                outcome.complete(.success(try await body()))
            } catch {
                outcome.complete(.failure(error))
            }
        }
        // Unstructured on purpose: past the hard limit the worker must be able to stop waiting for a handler
        // that ignores cancellation, which a child task would not allow.
        let handler: Task<Void, Never>
        if soft == nil, hard == nil, #available(macOS 26, *) {
            // No timer to start first: the handler begins on this thread, and one that does not suspend has
            // finished before the wait below, which then does not suspend either (no hand-off to another thread
            // and back). One that suspends (`registerBlocking` handlers do, into the thread pool) can be
            // terminated from then on, as before. One that never suspends could not be stopped in any case.
            handler = Task.immediate { await runBody() }
        } else {
            handler = Task { await runBody() }
        }
        // `revoke --terminate`: stop waiting at once, as for the hard limit.
        // The outcome first: the cancelled handler's own error must not win the race.
        termination?.onFire {
            outcome.complete(.failure(TaskTerminated()))
            handler.cancel()
        }
        // A cold shutdown cancels the executor: pass it on to the handler.
        @Sendable func outcomeOrCancel() async -> Result<JSONValue, any Error> {
            await withTaskCancellationHandler {
                await outcome.wait()
            } onCancel: {
                handler.cancel()
            }
        }
        // Without limits (most tasks) there is no timer to run beside the handler: no task group either.
        guard soft != nil || hard != nil else { return try Self.unwrap(await outcomeOrCancel(), soft: nil, outcome) }
        let result = await withTaskGroup(of: Void.self) { timers in
            if let soft {
                timers.addTask {
                    guard (try? await Task.sleep(for: soft)) != nil, !outcome.isComplete else { return }
                    outcome.softFired.store(true, ordering: .relaxed)
                    handler.cancel()
                }
            }
            if let hard {
                timers.addTask {
                    guard (try? await Task.sleep(for: hard)) != nil else { return }
                    handler.cancel()
                    outcome.complete(.failure(TimeLimitError.hard(seconds(hard))))
                }
            }
            let result = await outcomeOrCancel()
            timers.cancelAll()
            return result
        }
        return try Self.unwrap(result, soft: soft, outcome)
    }

    /// The handler's value, or the error to report: a soft limit that cancelled the handler wins over the error
    /// the cancellation made it throw.
    private static func unwrap(
        _ result: Result<JSONValue, any Error>,
        soft: Duration?,
        _ outcome: Outcome
    ) throws -> JSONValue {
        switch result {
        case .success(let value):
            return value
        case .failure(let error as TimeLimitError):
            throw error
        case .failure(let error as TaskTerminated):
            throw error
        case .failure(let error):
            if outcome.softFired.load(ordering: .relaxed), let soft { throw TimeLimitError.soft(seconds(soft)) }
            throw error
        }
    }

    package static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// A limit from the message (`timelimit` is `[hard, soft]` in seconds) or the handler's default.
    package static func duration(_ seconds: Double?, default fallback: Duration?) -> Duration? {
        guard let seconds, seconds > 0, seconds.isFinite else { return fallback }
        return .nanoseconds(Int64(min(seconds, 1e9) * 1e9))
    }
}
