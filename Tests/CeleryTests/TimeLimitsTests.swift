import CeleryClient
import JSON
import Synchronization
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// `TimeLimits.run` without time limits, as most tasks run: the handler starts at once on the caller's thread
/// (`Task.immediate`), and `revoke --terminate` still stops one that has suspended.
struct TimeLimitsTests {
    struct Boom: Error {}

    final class Flag: Sendable {
        let raised = Atomic<Bool>(false)
        var isRaised: Bool { raised.load(ordering: .relaxed) }
    }

    @Test func aHandlerThatDoesNotSuspendReturnsItsValue() async throws {
        let value = try await TimeLimits.run(soft: nil, hard: nil, termination: TaskTermination()) { .int(4) }
        #expect(value == .int(4))
    }

    @Test func aHandlerThatDoesNotSuspendThrowsItsError() async {
        await #expect(throws: Boom.self) {
            try await TimeLimits.run(soft: nil, hard: nil, termination: TaskTermination()) { throw Boom() }
        }
    }

    @Test func terminationStopsASuspendedHandler() async {
        let termination = TaskTermination()
        let sawCancellation = Flag()
        let start = ContinuousClock.now
        let firing = Task {
            try? await Task.sleep(for: .milliseconds(50))
            termination.fire()
        }
        await #expect(throws: TaskTerminated.self) {
            try await TimeLimits.run(soft: nil, hard: nil, termination: termination) {
                do {
                    try await Task.sleep(for: .seconds(30))
                } catch {
                    sawCancellation.raised.store(true, ordering: .relaxed)
                    throw error
                }
                return .null
            }
        }
        #expect(ContinuousClock.now - start < .seconds(10))
        await firing.value
        // The handler was cancelled, not only abandoned.
        for _ in 0..<100 where !sawCancellation.isRaised {
            try? await Task.sleep(for: .milliseconds(10))
        }
        #expect(sawCancellation.isRaised)
    }

    @Test func terminationFiredBeforeTheHandlerSuspendsStillStopsIt() async {
        let termination = TaskTermination()
        await #expect(throws: TaskTerminated.self) {
            try await TimeLimits.run(soft: nil, hard: nil, termination: termination) {
                termination.fire()  // while the handler still runs on the caller's thread
                try await Task.sleep(for: .seconds(30))
                return .null
            }
        }
    }
}
