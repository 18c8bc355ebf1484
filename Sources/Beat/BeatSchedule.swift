import Foundation

/// When an entry runs: every fixed interval, or at the times a crontab names.
public enum BeatSchedule: Sendable, Hashable, CustomStringConvertible {
    /// Every `milliseconds`, anchored at the entry's first due time (slots do not drift with beat's lag).
    case interval(milliseconds: Int64)
    /// At the minutes a crontab matches.
    case crontab(Crontab)

    /// The first slot strictly after `time` (milliseconds since 1970). For an interval the slots are
    /// `anchor + k × interval`; nil when a crontab never matches again.
    public func next(after time: Int64, anchor: Int64) -> Int64? {
        switch self {
        case .interval(let every):
            guard time >= anchor else { return anchor }
            return anchor + ((time - anchor) / every + 1) * every
        case .crontab(let crontab):
            guard let seconds = crontab.next(after: Double(time) / 1000) else { return nil }
            return Int64((seconds * 1000).rounded())
        }
    }

    /// The first due time of an entry beat has never run: one interval from now (as Celery beat), or the
    /// crontab's next match.
    public func firstDue(now: Int64) -> Int64? {
        switch self {
        case .interval(let every): now + every
        case .crontab: next(after: now, anchor: now)
        }
    }

    /// What the schedule means, equal for equal schedules however written; a change makes the entry due anew.
    var canonicalKey: String {
        switch self {
        case .interval(let every): "interval:\(every)"
        case .crontab(let crontab): crontab.canonicalKey
        }
    }

    public var description: String {
        switch self {
        case .interval(let every): "every \(Self.render(milliseconds: every))"
        case .crontab(let crontab): crontab.description
        }
    }

    static func render(milliseconds: Int64) -> String {
        if milliseconds % 1000 != 0 { return "\(Double(milliseconds) / 1000)s" }
        let seconds = milliseconds / 1000
        if seconds % 86400 == 0 { return "\(seconds / 86400)d" }
        if seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }

    /// Parses an interval: a number of seconds (`30`, `2.5`) or a duration with units (`30s`, `5m`, `1h`, `1d`,
    /// `1h30m`, `500ms`). The error says what is wrong; it must be positive.
    static func parseInterval(_ text: String) throws(BeatError) -> Int64 {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        func invalid() -> BeatError {
            BeatError(
                .invalidSchedule,
                "'\(text)' is not an interval; write seconds (30) or a duration such as 30s, 5m, 1h, 1d, 1h30m"
            )
        }
        if let seconds = Double(trimmed) {
            return try milliseconds(seconds: seconds, text: text)
        }
        var total: Double = 0
        var rest = Substring(trimmed)
        guard !rest.isEmpty else { throw invalid() }
        while !rest.isEmpty {
            let number = rest.prefix(while: { $0.isNumber || $0 == "." })
            guard !number.isEmpty, let value = Double(number) else { throw invalid() }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix(while: { $0.isLetter })
            rest = rest.dropFirst(unit.count)
            switch unit {
            case "ms": total += value / 1000
            case "s": total += value
            case "m": total += value * 60
            case "h": total += value * 3600
            case "d": total += value * 86400
            default: throw invalid()
            }
        }
        return try milliseconds(seconds: total, text: text)
    }

    private static func milliseconds(seconds: Double, text: String) throws(BeatError) -> Int64 {
        guard seconds.isFinite, seconds < 1e12 else {
            throw BeatError(.invalidSchedule, "'\(text)' is not a finite interval")
        }
        let milliseconds = Int64((seconds * 1000).rounded())
        guard milliseconds >= 1 else {
            throw BeatError(.invalidSchedule, "'\(text)' must be a positive interval (at least 1 ms)")
        }
        return milliseconds
    }
}
