import Foundation
import JSON
import Testing

@testable import Beat

/// ISO-8601 to milliseconds since 1970.
func ms(_ iso: String) -> Int64 {
    Int64((CeleryTimestamp(iso8601: iso)!.secondsSince1970 * 1000).rounded())
}

func iso(_ milliseconds: Int64?) -> String {
    guard let milliseconds else { return "never" }
    return CeleryTimestamp(secondsSince1970: Double(milliseconds) / 1000).iso8601
}

struct CrontabCase: CustomTestStringConvertible, Sendable {
    var expression: String
    var zone: String = "UTC"
    var after: String
    var expected: String
    var testDescription: String { "'\(expression)' \(zone) after \(after)" }
}

@Suite struct CrontabTests {
    static let cases: [CrontabCase] = [
        // Steps, ranges, lists.
        .init(expression: "*/15 * * * *", after: "2026-01-01T00:07:00Z", expected: "2026-01-01T00:15:00+00:00"),
        .init(expression: "*/15 * * * *", after: "2026-01-01T00:15:00Z", expected: "2026-01-01T00:30:00+00:00"),
        .init(expression: "*/15 * * * *", after: "2026-01-01T23:59:30Z", expected: "2026-01-02T00:00:00+00:00"),
        .init(expression: "10-30/10 * * * *", after: "2026-01-01T00:30:00Z", expected: "2026-01-01T01:10:00+00:00"),
        .init(expression: "5/20 * * * *", after: "2026-01-01T00:46:00Z", expected: "2026-01-01T01:05:00+00:00"),
        .init(expression: "0 22-2 * * *", after: "2026-01-01T02:00:00Z", expected: "2026-01-01T22:00:00+00:00"),
        .init(expression: "0 22-2 * * *", after: "2026-01-01T23:00:00Z", expected: "2026-01-02T00:00:00+00:00"),
        .init(expression: "0 8,12,18 * * *", after: "2026-01-01T12:00:00Z", expected: "2026-01-01T18:00:00+00:00"),
        // Names and weekdays (2026-01-02 is a Friday).
        .init(expression: "0 12 * * mon-fri", after: "2026-01-02T12:00:00Z", expected: "2026-01-05T12:00:00+00:00"),
        .init(expression: "30 6 * jan,jul sun", after: "2026-01-10T00:00:00Z", expected: "2026-01-11T06:30:00+00:00"),
        .init(expression: "0 0 * * 7", after: "2026-01-05T00:00:00Z", expected: "2026-01-11T00:00:00+00:00"),
        .init(expression: "0 0 * * sat-sun", after: "2026-01-05T00:00:00Z", expected: "2026-01-10T00:00:00+00:00"),
        .init(expression: "0 0 * * fri-mon", after: "2026-01-06T00:00:00Z", expected: "2026-01-09T00:00:00+00:00"),
        .init(expression: "0 9 * mar * ", after: "2026-01-01T00:00:00Z", expected: "2026-03-01T09:00:00+00:00"),
        // Day of month AND day of week, as Celery: the first Monday of the month.
        .init(expression: "0 0 1-7 * mon", after: "2026-01-06T00:00:00Z", expected: "2026-02-02T00:00:00+00:00"),
        // Month ends and leap years.
        .init(expression: "0 0 31 * *", after: "2026-04-15T00:00:00Z", expected: "2026-05-31T00:00:00+00:00"),
        .init(expression: "0 0 29 2 *", after: "2026-03-01T00:00:00Z", expected: "2028-02-29T00:00:00+00:00"),
        .init(expression: "0 0 29 * *", after: "2024-01-29T00:00:00Z", expected: "2024-02-29T00:00:00+00:00"),
        .init(expression: "0 0 29 * *", after: "2026-01-29T00:00:00Z", expected: "2026-03-29T00:00:00+00:00"),
        .init(expression: "0 0 29 2 *", after: "2096-03-01T00:00:00Z", expected: "2104-02-29T00:00:00+00:00"),
        .init(expression: "0 0 28-31 2 *", after: "2027-02-28T00:00:00Z", expected: "2028-02-28T00:00:00+00:00"),
        .init(expression: "59 23 31 12 *", after: "2026-12-31T23:59:00Z", expected: "2027-12-31T23:59:00+00:00"),
        .init(expression: "0 0 1 * *", after: "2026-12-15T10:00:00Z", expected: "2027-01-01T00:00:00+00:00"),
        // A fraction of a second past a slot still waits for the next one.
        .init(expression: "* * * * *", after: "2026-01-01T00:00:00.5Z", expected: "2026-01-01T00:01:00+00:00"),
        // Time zones: fields read in the zone's wall clock.
        .init(
            expression: "0 9 * * *",
            zone: "Asia/Kolkata",
            after: "2026-01-01T00:00:00Z",
            expected: "2026-01-01T03:30:00+00:00"
        ),
        // DST in America/New_York: 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00Z).
        .init(
            expression: "30 2 * * *",
            zone: "America/New_York",
            after: "2026-03-07T08:00:00Z",
            expected: "2026-03-08T07:00:00+00:00"
        ),  // 02:30 does not exist: fires as the gap ends
        .init(
            expression: "30 2 * * *",
            zone: "America/New_York",
            after: "2026-03-08T07:00:00Z",
            expected: "2026-03-09T06:30:00+00:00"
        ),
        .init(
            expression: "0 3 * * *",
            zone: "America/New_York",
            after: "2026-03-08T06:00:00Z",
            expected: "2026-03-08T07:00:00+00:00"
        ),
        .init(
            expression: "0 12 * * *",
            zone: "America/New_York",
            after: "2026-03-07T18:00:00Z",
            expected: "2026-03-08T16:00:00+00:00"
        ),  // noon EDT
        // 2026-11-01 02:00 EDT falls back to 01:00 EST (06:00Z): 01:30 happens twice.
        .init(
            expression: "30 1 * * *",
            zone: "America/New_York",
            after: "2026-10-31T12:00:00Z",
            expected: "2026-11-01T05:30:00+00:00"
        ),
        .init(
            expression: "30 1 * * *",
            zone: "America/New_York",
            after: "2026-11-01T05:30:00Z",
            expected: "2026-11-02T06:30:00+00:00"
        ),  // a fixed hour fires in the first pass only
        .init(
            expression: "30 * * * *",
            zone: "America/New_York",
            after: "2026-11-01T05:30:00Z",
            expected: "2026-11-01T06:30:00+00:00"
        ),  // every hour: the repeated 01:30 fires again
        // Europe/Berlin: CET → CEST on 2026-03-29 at 01:00Z.
        .init(
            expression: "0 9 * * *",
            zone: "Europe/Berlin",
            after: "2026-03-28T12:00:00Z",
            expected: "2026-03-29T07:00:00+00:00"
        ),
        .init(
            expression: "0 9 * * *",
            zone: "Europe/Berlin",
            after: "2026-03-27T12:00:00Z",
            expected: "2026-03-28T08:00:00+00:00"
        ),
    ]

    @Test(arguments: cases)
    func nextFireTime(_ row: CrontabCase) throws {
        let crontab = try Crontab(expression: row.expression, timeZone: TimeZone(identifier: row.zone)!)
        let schedule = BeatSchedule.crontab(crontab)
        let next = schedule.next(after: ms(row.after), anchor: 0)
        #expect(iso(next) == row.expected)
    }

    @Test func fieldsAsCeleryNamesThem() throws {
        let crontab = try Crontab(minute: "0", hour: "*/6", dayOfWeek: "mon,wed", dayOfMonth: "*", monthOfYear: "*")
        // 2026-01-05 is a Monday.
        let next = BeatSchedule.crontab(crontab).next(after: ms("2026-01-05T06:00:00Z"), anchor: 0)
        #expect(iso(next) == "2026-01-05T12:00:00+00:00")
    }

    @Test func sequenceOverADay() throws {
        let schedule = BeatSchedule.crontab(try Crontab(expression: "0 */6 * * *"))
        var time = ms("2026-06-01T00:00:00Z")
        var seen: [String] = []
        for _ in 0..<5 {
            time = schedule.next(after: time, anchor: 0)!
            seen.append(iso(time))
        }
        #expect(
            seen == [
                "2026-06-01T06:00:00+00:00", "2026-06-01T12:00:00+00:00", "2026-06-01T18:00:00+00:00",
                "2026-06-02T00:00:00+00:00", "2026-06-02T06:00:00+00:00",
            ]
        )
    }

    struct BadField: CustomTestStringConvertible, Sendable {
        var expression: String
        var mentions: [String]
        var testDescription: String { expression }
    }

    static let badFields: [BadField] = [
        .init(expression: "61 * * * *", mentions: ["minute", "61", "0-59"]),
        .init(expression: "* 24 * * *", mentions: ["hour", "24", "0-23"]),
        .init(expression: "* * 0 * *", mentions: ["day_of_month", "0", "1-31"]),
        .init(expression: "* * * 13 *", mentions: ["month_of_year", "13"]),
        .init(expression: "* * * * funday", mentions: ["day_of_week", "funday"]),
        .init(expression: "* * * smarch *", mentions: ["month_of_year", "smarch"]),
        .init(expression: "*/0 * * * *", mentions: ["minute", "step"]),
        .init(expression: "1-x * * * *", mentions: ["minute", "x"]),
        .init(expression: "1,,2 * * * *", mentions: ["minute", "empty"]),
        .init(expression: "* * 31 2 *", mentions: ["day_of_month", "never"]),
        .init(expression: "* * * *", mentions: ["5"]),
    ]

    @Test(arguments: badFields)
    func badFieldsAreClearErrors(_ row: BadField) {
        do {
            _ = try Crontab(expression: row.expression)
            Issue.record("'\(row.expression)' was accepted")
        } catch {
            #expect(error.code == .invalidSchedule)
            for word in row.mentions {
                #expect(error.message.contains(word), "\(error.message) should mention \(word)")
            }
        }
    }

    @Test func intervalsParse() throws {
        #expect(try BeatSchedule.parseInterval("30") == 30_000)
        #expect(try BeatSchedule.parseInterval("2.5") == 2500)
        #expect(try BeatSchedule.parseInterval("30s") == 30_000)
        #expect(try BeatSchedule.parseInterval("5m") == 300_000)
        #expect(try BeatSchedule.parseInterval("1h") == 3_600_000)
        #expect(try BeatSchedule.parseInterval("1d") == 86_400_000)
        #expect(try BeatSchedule.parseInterval("1h30m") == 5_400_000)
        #expect(try BeatSchedule.parseInterval("500ms") == 500)
        for bad in ["", "0", "-5", "5x", "m", "nan", "inf", "1h-2m"] {
            #expect(throws: BeatError.self, "'\(bad)'") { try BeatSchedule.parseInterval(bad) }
        }
    }

    @Test func intervalSlotsAreAnchored() {
        let schedule = BeatSchedule.interval(milliseconds: 10_000)
        #expect(schedule.next(after: 1_000, anchor: 5_000) == 5_000)
        #expect(schedule.next(after: 5_000, anchor: 5_000) == 15_000)
        #expect(schedule.next(after: 14_999, anchor: 5_000) == 15_000)
        #expect(schedule.next(after: 95_001, anchor: 5_000) == 105_000)
        #expect(schedule.firstDue(now: 1_000) == 11_000)
    }

    @Test func planCollapsesMissedSlotsAndHonoursTheDeadline() {
        let every10 = BeatSchedule.interval(milliseconds: 10_000)
        // On time.
        #expect(
            BeatPlan.make(schedule: every10, due: 10_000, now: 10_050, startingDeadline: nil)
                == BeatPlan(send: true, nextDue: 20_000, collapsed: false)
        )
        // Nine slots missed: one run, next slot after now.
        #expect(
            BeatPlan.make(schedule: every10, due: 20_000, now: 105_000, startingDeadline: nil)
                == BeatPlan(send: true, nextDue: 110_000, collapsed: true)
        )
        // The latest missed slot (100 s) is 5 s old: within a 6 s deadline, past a 3 s one.
        #expect(BeatPlan.make(schedule: every10, due: 20_000, now: 105_000, startingDeadline: 6_000).send)
        #expect(!BeatPlan.make(schedule: every10, due: 20_000, now: 105_000, startingDeadline: 3_000).send)
        #expect(
            BeatPlan.make(schedule: every10, due: 20_000, now: 105_000, startingDeadline: 3_000).nextDue == 110_000
        )
    }
}
