import Testing

@testable import Celery

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

    /// The timer of a wait that a signal ended is not awaited: if it runs out after all, it must not end a later
    /// wait.
    @Test func anEarlierWaitsTimerDoesNotEndALaterWait() async {
        let timer = TimerSignal()
        timer.signal()
        await timer.wait(for: nil)  // wait number 1, ended by the signal
        let start = ContinuousClock.now
        let later = Task { await timer.wait(for: .milliseconds(300)) }
        try? await Task.sleep(for: .milliseconds(20))
        timer.expire(1)  // what the first wait's timer would do had it run out
        await later.value
        #expect(ContinuousClock.now - start >= .milliseconds(300))
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
