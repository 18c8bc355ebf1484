import CeleryClient
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Celery's rate strings and the per-worker schedule (a token bucket of capacity 1).
struct RateLimitTests {
    static let rates: [(String, Double)] = [
        ("10/s", 10), ("100/m", 100.0 / 60), ("1000/h", 1000.0 / 3600), ("0.5/s", 0.5), ("5", 5),
        (" 2 /s", 2), ("0", 0), ("", 0), ("1e1/m", 10.0 / 60),
    ]

    @Test(arguments: rates)
    func parsesCeleryRates(text: String, perSecond: Double) throws {
        let limit = try TaskRateLimit(text)
        #expect(abs(limit.perSecond - perSecond) < 1e-9)
        #expect(limit.isLimited == (perSecond > 0))
        #expect(limit.text == text)
    }

    @Test func refusesWhatPythonRefuses() {
        #expect(throws: TaskRateLimit.ParseError.self) { try TaskRateLimit("abc") }
        do {
            _ = try TaskRateLimit("abc")
        } catch {
            #expect(error.isValueError)
            #expect(error.pythonRepr == #"ValueError("could not convert string to float: 'abc'")"#)
        }
        do {
            _ = try TaskRateLimit("10/d")
            Issue.record("10/d was accepted")
        } catch {
            #expect(!error.isValueError)
            #expect(error.pythonRepr == "KeyError('d')")
        }
        #expect(throws: TaskRateLimit.ParseError.self) { try TaskRateLimit("-1/s") }
        #expect(throws: TaskRateLimit.ParseError.self) { try TaskRateLimit("/s") }
    }

    @Test func localLimitSpacesTasksEvenly() throws {
        let limits = LocalRateLimits()
        limits.set(try TaskRateLimit("4/s"), for: "t")
        let start = ContinuousClock.now
        // The first runs at once (the bucket starts full), then one every 250 ms.
        #expect(limits.reserve("t", now: start) == nil)
        #expect(limits.reserve("t", now: start) == .milliseconds(250))
        #expect(limits.reserve("t", now: start) == .milliseconds(500))
        #expect(limits.reserve("t", now: start + .milliseconds(100)) == .milliseconds(650))
        // Other names are not limited.
        #expect(limits.reserve("other", now: start) == nil)
        // After a quiet spell the next one runs at once again (no burst credit is saved up).
        let later = start + .seconds(5)
        #expect(limits.reserve("t", now: later) == nil)
        #expect(limits.reserve("t", now: later) == .milliseconds(250))
    }

    @Test func changingTheLimitResetsTheSchedule() throws {
        let limits = LocalRateLimits()
        let start = ContinuousClock.now
        limits.set(try TaskRateLimit("1/m"), for: "t")
        #expect(limits.reserve("t", now: start) == nil)
        #expect(limits.reserve("t", now: start) == .seconds(60))
        limits.set(try TaskRateLimit("10/s"), for: "t")
        #expect(limits.limit(for: "t")?.text == "10/s")
        #expect(limits.reserve("t", now: start) == nil)
        #expect(limits.reserve("t", now: start) == .milliseconds(100))
        limits.set(try TaskRateLimit("0"), for: "t")  // "0" disables, as in Celery
        #expect(limits.limit(for: "t") == nil)
        #expect(limits.reserve("t", now: start) == nil)
    }
}
