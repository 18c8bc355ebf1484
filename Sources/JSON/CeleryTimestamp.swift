#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An instant as Celery writes it in ISO-8601 (`eta`, `expires`, `date_done`), without Foundation.
///
/// Parsing follows Python 3.11's `datetime.fromisoformat` for the extended forms Celery produces:
/// `YYYY-MM-DD`, then `T`, `t` or a space, then `HH[:MM[:SS[.f…]]]` (fraction of any length after `.` or `,`,
/// truncated to microseconds as Python does), then `Z`, `±HH[:MM[:SS[.f…]]]`, `±HHMM` or nothing (naive = UTC).
/// Basic forms (`20260102T030405`) and week dates are not accepted.
public struct CeleryTimestamp: Sendable, Hashable, Comparable {
    /// Seconds since 1970-01-01T00:00:00Z.
    public var secondsSince1970: Double

    /// Creates a timestamp from seconds since the Unix epoch.
    public init(secondsSince1970: Double) {
        self.secondsSince1970 = secondsSince1970
    }

    /// Orders timestamps by time.
    public static func < (lhs: Self, rhs: Self) -> Bool {
        lhs.secondsSince1970 < rhs.secondsSince1970
    }

    /// The current wall-clock time (`CLOCK_REALTIME`).
    public static func now() -> CeleryTimestamp {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return CeleryTimestamp(secondsSince1970: Double(now.tv_sec) + Double(now.tv_nsec) / 1_000_000_000)
    }
}

extension CeleryTimestamp {
    /// Parses an ISO-8601 date-time as Python's `datetime.fromisoformat` does; a naive one is taken as UTC.
    public init?(iso8601 text: some StringProtocol) {
        var parser = Parser(Array(text.utf8))
        guard let seconds = parser.parseTimestamp() else { return nil }
        self.init(secondsSince1970: seconds)
    }

    /// Python's `isoformat()` of the aware UTC `datetime`: `2026-11-22T02:54:10.882025+00:00`.
    ///
    /// Microseconds are rounded half-to-even as `datetime.fromtimestamp` does and omitted when zero.
    /// A non-finite or astronomically large value (no Python `datetime`) is written as its number, e.g. `nan`.
    public var iso8601: String {
        // Split like CPython's _PyTime_ObjectToTimeval: whole seconds, then the rounded microseconds.
        var whole = self.secondsSince1970.rounded(.towardZero)
        var micro = ((self.secondsSince1970 - whole) * 1_000_000).rounded(.toNearestOrEven)
        if micro >= 1_000_000 {
            micro -= 1_000_000
            whole += 1
        } else if micro < 0 {
            micro += 1_000_000
            whole -= 1
        }
        guard whole.isFinite, abs(whole) < 1e15 else { return "\(self.secondsSince1970)" }
        let seconds = Int(whole)
        let days = Self.floorDivide(seconds, 86_400)
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = Self.civil(fromDays: days)

        var output: [UInt8] = []
        output.reserveCapacity(32)
        if year < 0 { output.append(UInt8(ascii: "-")) }
        Self.append(abs(year), width: 4, to: &output)
        output.append(UInt8(ascii: "-"))
        Self.append(month, width: 2, to: &output)
        output.append(UInt8(ascii: "-"))
        Self.append(day, width: 2, to: &output)
        output.append(UInt8(ascii: "T"))
        Self.append(secondOfDay / 3600, width: 2, to: &output)
        output.append(UInt8(ascii: ":"))
        Self.append(secondOfDay / 60 % 60, width: 2, to: &output)
        output.append(UInt8(ascii: ":"))
        Self.append(secondOfDay % 60, width: 2, to: &output)
        if micro != 0 {
            output.append(UInt8(ascii: "."))
            Self.append(Int(micro), width: 6, to: &output)
        }
        output.append(contentsOf: "+00:00".utf8)
        return String(decoding: output, as: UTF8.self)
    }

    /// Appends the decimal digits of `value` (not negative), zero-padded to `width`.
    private static func append(_ value: Int, width: Int, to output: inout [UInt8]) {
        var divisor = 1
        var count = 1
        while divisor <= value / 10 {
            divisor *= 10
            count += 1
        }
        for _ in count..<max(width, count) {
            output.append(UInt8(ascii: "0"))
        }
        var value = value
        while divisor > 0 {
            output.append(UInt8(ascii: "0") + UInt8(value / divisor))
            value %= divisor
            divisor /= 10
        }
    }

    static func floorDivide(_ value: Int, _ divisor: Int) -> Int {
        let quotient = value / divisor
        return value % divisor < 0 ? quotient - 1 : quotient
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    static func days(fromCivil year: Int, _ month: Int, _ day: Int) -> Int {
        let year = month <= 2 ? year - 1 : year
        let era = Self.floorDivide(year, 400)
        let yearOfEra = year - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
    static func civil(fromDays days: Int) -> (year: Int, month: Int, day: Int) {
        let shifted = days + 719_468
        let era = Self.floorDivide(shifted, 146_097)
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    static func isLeapYear(_ year: Int) -> Bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }

    static func daysInMonth(_ year: Int, _ month: Int) -> Int {
        switch month {
        case 2: Self.isLeapYear(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }
}

extension CeleryTimestamp {
    /// A cursor over ISO-8601 text.
    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        init(_ bytes: [UInt8]) {
            self.bytes = bytes
        }

        var atEnd: Bool { self.index == self.bytes.count }

        mutating func take(_ byte: UInt8) -> Bool {
            guard !self.atEnd, self.bytes[self.index] == byte else { return false }
            self.index += 1
            return true
        }

        /// Exactly `count` ASCII digits.
        mutating func number(digits count: Int) -> Int? {
            guard self.bytes.count - self.index >= count else { return nil }
            var value = 0
            for _ in 0..<count {
                let byte = self.bytes[self.index]
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
                self.index += 1
            }
            return value
        }

        /// `HH[:MM[:SS[.f…]]]` (or `HH[MM[SS…]]` without colons when `colons` is false), in microseconds.
        mutating func time(colons: Bool) -> Int? {
            guard let hour = self.number(digits: 2), hour < 24 else { return nil }
            var minute = 0
            var second = 0
            var micro = 0
            if self.startsComponent(colons: colons) {
                guard let value = self.number(digits: 2), value < 60 else { return nil }
                minute = value
                if self.startsComponent(colons: colons) {
                    guard let value = self.number(digits: 2), value < 60 else { return nil }
                    second = value
                    if self.take(UInt8(ascii: ".")) || self.take(UInt8(ascii: ",")) {
                        guard let value = self.fraction() else { return nil }
                        micro = value
                    }
                }
            }
            return ((hour * 60 + minute) * 60 + second) * 1_000_000 + micro
        }

        private mutating func startsComponent(colons: Bool) -> Bool {
            if colons { return self.take(UInt8(ascii: ":")) }
            guard !self.atEnd else { return false }
            let byte = self.bytes[self.index]
            return byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
        }

        /// One or more digits, truncated to microseconds as Python does.
        private mutating func fraction() -> Int? {
            var micro = 0
            var count = 0
            while !self.atEnd, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[self.index]) {
                if count < 6 { micro = micro * 10 + Int(self.bytes[self.index] - UInt8(ascii: "0")) }
                count += 1
                self.index += 1
            }
            guard count > 0 else { return nil }
            for _ in count..<max(count, 6) {
                micro *= 10
            }
            return micro
        }

        mutating func parseTimestamp() -> Double? {
            guard let year = self.number(digits: 4), year >= 1, self.take(UInt8(ascii: "-")),
                let month = self.number(digits: 2), (1...12).contains(month), self.take(UInt8(ascii: "-")),
                let day = self.number(digits: 2), day >= 1, day <= CeleryTimestamp.daysInMonth(year, month)
            else {
                return nil
            }
            var micros = 0
            var offsetMicros = 0
            if !self.atEnd {
                guard self.take(UInt8(ascii: "T")) || self.take(UInt8(ascii: "t")) || self.take(UInt8(ascii: " ")),
                    let time = self.time(colons: true)
                else {
                    return nil
                }
                micros = time
                if self.take(UInt8(ascii: "Z")) {
                    offsetMicros = 0
                } else if !self.atEnd {
                    let sign: Int
                    if self.take(UInt8(ascii: "+")) {
                        sign = 1
                    } else if self.take(UInt8(ascii: "-")) {
                        sign = -1
                    } else {
                        return nil
                    }
                    let colons = self.bytes.count - self.index > 2 && self.bytes[self.index + 2] == UInt8(ascii: ":")
                    guard let offset = self.time(colons: colons) else { return nil }
                    offsetMicros = sign * offset
                }
                guard self.atEnd else { return nil }
            }
            let days = CeleryTimestamp.days(fromCivil: year, month, day)
            let utcMicros = micros - offsetMicros  // may be negative: the offset can move the instant a day back
            let wholeSeconds = CeleryTimestamp.floorDivide(utcMicros, 1_000_000)
            let micro = utcMicros - wholeSeconds * 1_000_000
            return Double(days * 86_400 + wholeSeconds) + Double(micro) / 1_000_000
        }
    }
}
