import Foundation

/// A Celery `crontab` schedule: minute, hour, day of week, day of month and month of year, each `*`, a number, a
/// name (`mon`, `jan`), a range (`mon-fri`, `22-2` wraps), a list (`1,15`) or a step (`*/15`, `1-30/5`, `5/10`),
/// evaluated in a time zone (UTC by default).
///
/// As in Celery, a day must match day of week **and** day of month **and** month. Day of week 0 (and 7) is Sunday.
///
/// Daylight saving time: wall-clock times that do not exist (the hour skipped in spring) fire once, at the end of
/// the gap; wall-clock times that happen twice (the hour repeated in autumn) fire in the first pass only, unless
/// the hour field is `*`, in which case the repeated minutes fire again as ordinary elapsed time.
public struct Crontab: Sendable, Hashable, CustomStringConvertible {
    /// The fields as written.
    public let minute: String
    public let hour: String
    public let dayOfWeek: String
    public let dayOfMonth: String
    public let monthOfYear: String
    /// The zone the fields are read in.
    public let timeZone: TimeZone

    let minutes: UInt64
    let hours: UInt64
    let weekdays: UInt64
    let monthDays: UInt64
    let months: UInt64
    let everyHour: Bool

    /// Parses the fields; the error names the field and what is wrong with it.
    public init(
        minute: String = "*",
        hour: String = "*",
        dayOfWeek: String = "*",
        dayOfMonth: String = "*",
        monthOfYear: String = "*",
        timeZone: TimeZone = TimeZone(identifier: "UTC")!
    ) throws(BeatError) {
        self.minute = minute
        self.hour = hour
        self.dayOfWeek = dayOfWeek
        self.dayOfMonth = dayOfMonth
        self.monthOfYear = monthOfYear
        self.timeZone = timeZone
        minutes = try Self.parse(minute, field: "minute", range: 0...59)
        hours = try Self.parse(hour, field: "hour", range: 0...23)
        weekdays = try Self.parse(
            dayOfWeek,
            field: "day_of_week",
            range: 0...6,
            names: Self.weekdayNames,
            sunday7: true
        )
        monthDays = try Self.parse(dayOfMonth, field: "day_of_month", range: 1...31)
        months = try Self.parse(monthOfYear, field: "month_of_year", range: 1...12, names: Self.monthNames)
        everyHour = hours == (1 << 24) - 1
        // A day of month that no chosen month has (day_of_month 31 with month_of_year 2) would never fire.
        let possible = (1...12).contains { month in
            months & (1 << month) != 0 && (1...Self.longestMonth[month]).contains { monthDays & (1 << $0) != 0 }
        }
        guard possible else {
            throw BeatError(
                .invalidSchedule,
                "day_of_month: '\(dayOfMonth)' never falls in month_of_year '\(monthOfYear)', so it would never run"
            )
        }
    }

    /// Parses a five-field cron expression, `minute hour day_of_month month_of_year day_of_week` (cron's order).
    public init(expression: String, timeZone: TimeZone = TimeZone(identifier: "UTC")!) throws(BeatError) {
        let fields = expression.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw BeatError(
                .invalidSchedule,
                "'\(expression)' has \(fields.count) fields; a cron expression has 5: "
                    + "minute hour day_of_month month_of_year day_of_week"
            )
        }
        try self.init(
            minute: fields[0],
            hour: fields[1],
            dayOfWeek: fields[4],
            dayOfMonth: fields[2],
            monthOfYear: fields[3],
            timeZone: timeZone
        )
    }

    public var description: String {
        "crontab(minute='\(minute)', hour='\(hour)', day_of_week='\(dayOfWeek)', day_of_month='\(dayOfMonth)', "
            + "month_of_year='\(monthOfYear)', tz=\(zoneName))"
    }

    /// The zone's name; Foundation on Linux calls UTC "GMT", which reads as a different zone to most people.
    public var zoneName: String {
        timeZone.identifier == "GMT" ? "UTC" : timeZone.identifier
    }

    public static func == (lhs: Crontab, rhs: Crontab) -> Bool {
        lhs.minutes == rhs.minutes && lhs.hours == rhs.hours && lhs.weekdays == rhs.weekdays
            && lhs.monthDays == rhs.monthDays && lhs.months == rhs.months
            && lhs.timeZone.identifier == rhs.timeZone.identifier
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(minutes)
        hasher.combine(hours)
        hasher.combine(weekdays)
        hasher.combine(monthDays)
        hasher.combine(months)
        hasher.combine(timeZone.identifier)
    }

    /// A canonical text of what the schedule means (equal for equal schedules however written).
    var canonicalKey: String {
        "crontab:\(String(minutes, radix: 16)):\(String(hours, radix: 16)):\(String(weekdays, radix: 16)):"
            + "\(String(monthDays, radix: 16)):\(String(months, radix: 16)):\(timeZone.identifier)"
    }

    // MARK: - Next fire time

    /// The first fire time strictly after `time` (seconds since 1970), or nil if there is none within 40 years.
    public func next(after time: Double) -> Double? {
        var cursor = time
        var inclusive = false
        var skipWallBefore: Int64?
        for _ in 0..<200 {
            let offset = Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: cursor)))
            let transition = timeZone.nextDaylightSavingTimeTransition(after: Date(timeIntervalSince1970: cursor))?
                .timeIntervalSince1970
            var start = Int64((cursor + Double(offset)).rounded(.down))
            if inclusive { start -= 1 }
            if let skip = skipWallBefore, !everyHour { start = max(start, skip - 1) }
            if let wall = nextWallMatch(after: start) {
                let instant = Double(wall - offset)
                guard let transition, instant >= transition else { return instant }
            } else if transition == nil {
                return nil
            }
            guard let transition else { return nil }
            let transitionSecond = Int64(transition.rounded(.down))
            let offsetAfter = Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: transition)))
            skipWallBefore = nil
            if offsetAfter > offset {
                // Spring forward: wall times in [transition + offset, transition + offsetAfter) never happen; a
                // slot there fires when the gap ends.
                if let wall = nextWallMatch(after: transitionSecond + offset - 1), wall < transitionSecond + offsetAfter
                {
                    return transition
                }
            } else if offsetAfter < offset {
                // Fall back: wall times in [transition + offsetAfter, transition + offset) come a second time.
                skipWallBefore = transitionSecond + offset
            }
            cursor = transition
            inclusive = true
        }
        return nil
    }

    /// The first whole minute of wall-clock time (seconds since 1970 as if UTC) strictly after `wall` that matches.
    func nextWallMatch(after wall: Int64) -> Int64? {
        let minuteIndex = Self.floorDivide(wall, 60) + 1
        var days = Self.floorDivide(minuteIndex, 1440)
        let minuteOfDay = Int(minuteIndex - days * 1440)
        var hour = minuteOfDay / 60
        var minute = minuteOfDay % 60
        for _ in 0..<(366 * 40) {
            let (_, month, day) = Self.civil(fromDays: days)
            let weekday = Int(Self.floorModulo(days + 4, 7))  // 1970-01-01 was a Thursday
            if months & (1 << month) != 0, monthDays & (1 << day) != 0, weekdays & (1 << weekday) != 0 {
                while hour < 24 {
                    if hours & (1 << hour) != 0, let found = Self.firstBit(minutes, from: minute) {
                        return (days * 1440 + Int64(hour * 60 + found)) * 60
                    }
                    hour += 1
                    minute = 0
                }
            }
            days += 1
            hour = 0
            minute = 0
        }
        return nil
    }

    // MARK: - Parsing

    static let weekdayNames: [String: Int] = [
        "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
        "sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6,
    ]
    static let monthNames: [String: Int] = [
        "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10,
        "nov": 11, "dec": 12, "january": 1, "february": 2, "march": 3, "april": 4, "june": 6, "july": 7,
        "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    ]
    static let longestMonth = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

    /// One field as a bit set: items separated by commas, each `*`, `n`, `a-b` (wrapping when a > b), with an
    /// optional `/step`; `n/step` means from n to the end of the range.
    static func parse(
        _ text: String,
        field: String,
        range: ClosedRange<Int>,
        names: [String: Int] = [:],
        sunday7: Bool = false
    ) throws(BeatError) -> UInt64 {
        func invalid(_ why: String) -> BeatError {
            BeatError(.invalidSchedule, "\(field): '\(text)' \(why)")
        }
        let upper = sunday7 ? range.upperBound + 1 : range.upperBound
        func value(_ raw: Substring) throws(BeatError) -> Int {
            let token = raw.trimmingCharacters(in: .whitespaces).lowercased()
            if let number = Int(token) {
                guard number >= range.lowerBound, number <= upper else {
                    throw invalid("has \(number), out of range \(range.lowerBound)-\(upper)")
                }
                return number
            }
            if let named = names[token] { return named }
            if names.isEmpty { throw invalid("has '\(token)', which is not a number") }
            throw invalid("has '\(token)', which is neither a number nor a name")
        }
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw invalid("is empty") }
        var mask: UInt64 = 0
        for item in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard !item.trimmingCharacters(in: .whitespaces).isEmpty, parts.count <= 2 else {
                throw invalid("has an empty or malformed item '\(item)'")
            }
            var step = 1
            if parts.count == 2 {
                guard let parsed = Int(parts[1].trimmingCharacters(in: .whitespaces)), parsed > 0 else {
                    throw invalid("has step '\(parts[1])'; a step is a positive integer")
                }
                step = parsed
            }
            let base = parts[0].trimmingCharacters(in: .whitespaces)
            var values: [Int]
            if base == "*" {
                values = Array(range)
            } else if let dash = base.firstIndex(of: "-"), dash != base.startIndex {
                let low = try value(base[..<dash])
                let high = try value(base[base.index(after: dash)...])
                if low <= high {
                    values = Array(low...high)
                } else {
                    let wrappedHigh = sunday7 && high == upper ? range.lowerBound : high
                    values = Array(low...range.upperBound) + Array(range.lowerBound...wrappedHigh)
                }
            } else {
                let single = try value(base[...])
                values = parts.count == 2 ? Array(single...max(single, range.upperBound)) : [single]
            }
            for (index, value) in values.enumerated() where index % step == 0 {
                mask |= 1 << (sunday7 && value == upper ? range.lowerBound : value)
            }
        }
        return mask
    }

    // MARK: - Calendar arithmetic (proleptic Gregorian)

    static func floorDivide(_ value: Int64, _ divisor: Int64) -> Int64 {
        let quotient = value / divisor
        return value % divisor < 0 ? quotient - 1 : quotient
    }

    static func floorModulo(_ value: Int64, _ divisor: Int64) -> Int64 {
        value - floorDivide(value, divisor) * divisor
    }

    static func firstBit(_ mask: UInt64, from start: Int) -> Int? {
        guard start < 64 else { return nil }
        let remaining = mask >> UInt64(start)
        guard remaining != 0 else { return nil }
        return start + remaining.trailingZeroBitCount
    }

    /// The date of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
    static func civil(fromDays days: Int64) -> (year: Int64, month: Int, day: Int) {
        let shifted = days + 719_468
        let era = floorDivide(shifted, 146_097)
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * monthIndex + 2) / 5 + 1)
        let month = Int(monthIndex < 10 ? monthIndex + 3 : monthIndex - 9)
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
