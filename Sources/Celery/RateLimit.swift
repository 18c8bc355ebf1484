import CeleryProtocol
import CeleryRedis
import HeapModule
import JSON
import RESP
import Redis
import Synchronization

/// Celery's per-task rate limit string: `"10/s"`, `"100/m"`, `"1000/h"`, a bare number (per second) or a float
/// (`"0.5/s"`). Zero (or an empty string) means no limit, as in Celery.
public struct TaskRateLimit: Sendable, Hashable, CustomStringConvertible {
    /// Tasks per second; 0 is no limit.
    public var perSecond: Double
    /// The string as given, for `registered` and logs.
    public var text: String

    /// Why a rate string was refused, worded as Python's `celery.utils.time.rate()` fails.
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        /// The Python exception, e.g. `ValueError("could not convert string to float: 'abc'")`.
        public var pythonRepr: String
        /// Whether Python raises a `ValueError` (control answers "Invalid rate limit string") rather than another
        /// error (control answers with the error's repr).
        public var isValueError: Bool
        public var description: String { pythonRepr }
    }

    /// Parses a rate string as Celery's `rate()` does.
    public init(_ text: String) throws(ParseError) {
        self.text = text
        guard !text.isEmpty else {
            perSecond = 0
            return
        }
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let number = String(parts[0])
        let unit = parts.count > 1 ? String(parts[1]) : ""
        guard let value = Self.pythonFloat(number) else {
            throw ParseError(
                pythonRepr: "ValueError(\"could not convert string to float: \(Self.pythonQuoted(number))\")",
                isValueError: true
            )
        }
        let divisor: Double
        switch unit {
        case "", "s": divisor = 1
        case "m": divisor = 60
        case "h": divisor = 3600
        default: throw ParseError(pythonRepr: "KeyError(\(Self.pythonQuoted(unit)))", isValueError: false)
        }
        guard value.isFinite, value >= 0 else {
            throw ParseError(
                pythonRepr: "ValueError(\"a rate limit must be a finite number of 0 or more, got \(number)\")",
                isValueError: true
            )
        }
        perSecond = value / divisor
    }

    /// Whether this limits anything.
    public var isLimited: Bool { perSecond > 0 }

    /// The time between two tasks.
    public var interval: Duration {
        .nanoseconds(Int64(min(1e18, 1e9 / perSecond)))
    }

    public var description: String { text }

    /// Python's `float()` on a string: surrounding whitespace allowed, decimal or exponent notation.
    private static func pythonFloat(_ text: String) -> Double? {
        let stripped = text.strippingCharacters(" \t\n\r")
        guard !stripped.isEmpty,
            stripped.allSatisfy({ $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) }),
            let value = Double(stripped)
        else { return nil }
        return value
    }

    private static func pythonQuoted(_ text: String) -> String {
        PythonText.repr(text)
    }
}

extension String {
    fileprivate func strippingCharacters(_ set: String) -> Substring {
        var view = Substring(self)
        while let first = view.first, set.contains(first) { view.removeFirst() }
        while let last = view.last, set.contains(last) { view.removeLast() }
        return view
    }
}

/// Per-worker rate limits by task name, as Celery's consumer keeps them: a token bucket of capacity 1 (no bursts)
/// per task, here as its equivalent schedule (each task gets the next free slot, one interval after the last).
/// `control rate_limit` replaces a task's limit and resets its schedule.
package final class LocalRateLimits: Sendable {
    private struct Entry {
        var limit: TaskRateLimit
        /// When the next task of this name may start.
        var nextFree: ContinuousClock.Instant?
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// Sets (or with a non-limiting rate, removes) the limit for `taskName`.
    package func set(_ limit: TaskRateLimit?, for taskName: String) {
        entries.withLock { entries in
            if let limit, limit.isLimited {
                entries[taskName] = Entry(limit: limit, nextFree: nil)
            } else {
                entries[taskName] = nil
            }
        }
    }

    /// The limit in force for `taskName`.
    package func limit(for taskName: String) -> TaskRateLimit? {
        entries.withLock { $0[taskName]?.limit }
    }

    /// Reserves the next slot for one task of `taskName`: nil to run now, else how long to wait first.
    package func reserve(_ taskName: String, now: ContinuousClock.Instant = .now) -> Duration? {
        entries.withLock { entries -> Duration? in
            guard var entry = entries[taskName] else { return nil }
            let slot = max(now, entry.nextFree ?? now)
            entry.nextFree = slot + entry.limit.interval
            entries[taskName] = entry
            return slot > now ? slot - now : nil
        }
    }
}

/// A rate limit shared by every worker on one Redis: each task start takes the next free slot of a schedule kept
/// in Redis (the generic cell rate algorithm: one key per task name holding the time the next slot is free, on
/// the server's clock), so N workers together start at most `rate` tasks per second, evenly spaced.
package struct GlobalRateLimiter: Sendable {
    package let client: RedisClient
    /// Prefixed to the task name: `swift-celery:rate:<task name>`.
    package var keyPrefix = "swift-celery:rate:"

    /// KEYS[1]: the slot key. ARGV[1]: the interval in microseconds. Returns the wait in microseconds (0: now).
    package static let script = RedisScript(
        """
        local interval = tonumber(ARGV[1])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
        local slot = math.max(now, tat)
        local nextFree = slot + interval
        redis.call('SET', KEYS[1], string.format('%.0f', nextFree), 'PX', math.floor((nextFree - now) / 1000) + 1000)
        return math.floor(slot - now)
        """
    )

    /// Reserves the next global slot for one task; nil to run now, else how long to wait first.
    package func reserve(_ taskName: String, limit: TaskRateLimit) async throws(RedisError) -> Duration? {
        let microseconds = max(1, Int(min(1e15, 1e6 / limit.perSecond)))
        let reply = try await client.evaluate(
            Self.script,
            keys: [keyPrefix + taskName],
            arguments: [String(microseconds)]
        )
        guard let wait = reply.int else {
            throw RedisError(.unexpectedReply, "the global rate limit script answered \(reply)")
        }
        return wait > 0 ? .microseconds(wait) : nil
    }
}
