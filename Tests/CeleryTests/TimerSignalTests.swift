import CeleryClient
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The timer the worker's loops sleep on (the idle fetch loop's bell among them).
struct TimerSignalTests {
    @Test func aWaitEndsWhenItsTimeRunsOut() async {
        let timer = TimerSignal()
        let start = ContinuousClock.now
        await timer.wait(for: .milliseconds(50))
        #expect(ContinuousClock.now - start >= .milliseconds(50))
    }

    @Test func aSignalEndsAWaitEarly() async {
        let timer = TimerSignal()
        let start = ContinuousClock.now
        async let waited: Void = timer.wait(for: .seconds(30))
        try? await Task.sleep(for: .milliseconds(20))
        timer.signal()
        await waited
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func aSignalWithNobodyWaitingEndsTheNextWaitOnly() async {
        let timer = TimerSignal()
        timer.signal()
        let start = ContinuousClock.now
        await timer.wait(for: .seconds(30))
        #expect(ContinuousClock.now - start < .seconds(10))
        // It was used up: the next wait lasts its time.
        let second = ContinuousClock.now
        await timer.wait(for: .milliseconds(50))
        #expect(ContinuousClock.now - second >= .milliseconds(50))
    }

    @Test func discardPendingForgetsAnEarlierSignal() async {
        let timer = TimerSignal()
        timer.signal()
        timer.discardPending()
        let start = ContinuousClock.now
        await timer.wait(for: .milliseconds(50))
        #expect(ContinuousClock.now - start >= .milliseconds(50))
    }

    /// A wait that a signal ended leaves its timer armed: when it fires during a later, longer wait, that wait goes
    /// on for the rest of its own time.
    @Test func anEarlierWaitsTimerDoesNotEndALaterWait() async {
        let timer = TimerSignal()
        timer.signal()
        await timer.wait(for: .milliseconds(50))  // ended at once by the signal; its timer fires at 50 ms
        let start = ContinuousClock.now
        await timer.wait(for: .milliseconds(300))
        #expect(ContinuousClock.now - start >= .milliseconds(300))
        #expect(timer.timersArmed == 2)  // the first wait's, then one for the rest of the second
    }

    /// A later wait that must end sooner than the armed timer fires arms a timer of its own.
    @Test func aShorterLaterWaitEndsOnTime() async {
        let timer = TimerSignal()
        timer.signal()
        await timer.wait(for: .seconds(30))  // ended at once; its timer would fire in 30 s
        let start = ContinuousClock.now
        await timer.wait(for: .milliseconds(50))
        let waited = ContinuousClock.now - start
        #expect(waited >= .milliseconds(50) && waited < .seconds(10))
        #expect(timer.timersArmed == 2)
    }

    /// The idle fetch loop waits once per message with the same timeout: waits that signals end reuse one timer.
    @Test func waitsEndedBySignalsShareOneTimer() async {
        let timer = TimerSignal()
        for _ in 0..<100 {
            timer.signal()
            await timer.wait(for: .seconds(30))
        }
        #expect(timer.timersArmed == 1)
        // And that timer still ends a wait whose time runs out.
        let start = ContinuousClock.now
        await timer.wait(for: .milliseconds(50))
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        #expect(timer.timersArmed == 2)
    }

    @Test func cancellingTheWaiterEndsTheWait() async {
        let timer = TimerSignal()
        let start = ContinuousClock.now
        let waiter = Task { await timer.wait(for: nil) }
        try? await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        await waiter.value
        #expect(ContinuousClock.now - start < .seconds(10))
    }
}
