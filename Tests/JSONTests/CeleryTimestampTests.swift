import JSON
import Testing

@Suite("CeleryTimestamp")
struct CeleryTimestampTests {
    /// Inputs, Python's `fromisoformat(…).timestamp()` (naive as UTC) and `isoformat()` in UTC.
    @Test(arguments: [
        ("2026-11-22T02:54:10.882025+00:00", 1_795_316_050.882025, "2026-11-22T02:54:10.882025+00:00"),
        ("2030-01-01T12:00:00", 1_893_499_200.0, "2030-01-01T12:00:00+00:00"),
        ("2026-01-02T03:04:05Z", 1_767_323_045.0, "2026-01-02T03:04:05+00:00"),
        ("2026-01-02 03:04:05.5+05:30", 1_767_303_245.5, "2026-01-01T21:34:05.500000+00:00"),
        ("2024-02-29T23:59:59.999999-08:00", 1_709_279_999.999999, "2024-03-01T07:59:59.999999+00:00"),
        ("1969-12-31T23:59:59", -1.0, "1969-12-31T23:59:59+00:00"),
        ("1900-03-01T00:00:00+00:00", -2_203_891_200.0, "1900-03-01T00:00:00+00:00"),
        ("2026-01-02T03:04:05.1234567+01:00", 1_767_319_445.123456, "2026-01-02T02:04:05.123456+00:00"),
        ("2026-01-02", 1_767_312_000.0, "2026-01-02T00:00:00+00:00"),
        ("2026-01-02T03", 1_767_322_800.0, "2026-01-02T03:00:00+00:00"),
        ("2026-01-02T03:04", 1_767_323_040.0, "2026-01-02T03:04:00+00:00"),
        ("2026-01-02T03:04:05,25", 1_767_323_045.25, "2026-01-02T03:04:05.250000+00:00"),
        ("2026-01-02T03:04:05+0130", 1_767_317_645.0, "2026-01-02T01:34:05+00:00"),
        ("2026-01-02T03:04:05-01:30:15", 1_767_328_460.0, "2026-01-02T04:34:20+00:00"),
        ("0001-01-01T00:00:00", -62_135_596_800.0, "0001-01-01T00:00:00+00:00"),
        ("2000-02-29t00:00:00+00:00", 951_782_400.0, "2000-02-29T00:00:00+00:00"),
    ])
    func parsesAndFormatsLikePython(text: String, seconds: Double, formatted: String) throws {
        let timestamp = try #require(CeleryTimestamp(iso8601: text))
        #expect(timestamp.secondsSince1970 == seconds)
        #expect(timestamp.iso8601 == formatted)
        #expect(CeleryTimestamp(iso8601: formatted) == timestamp)
    }

    /// Strings Python's `fromisoformat` rejects (or that Celery never writes).
    @Test(arguments: [
        "", "x", "2025-02-29T00:00:00", "2026-13-01", "2026-00-01", "2026-01-00", "2026-04-31",
        "2026-01-02T24:00:00", "2026-01-02T03:60", "2026-01-02T03:04:60", "2026-01-02T03:04:05+24:00",
        "2026-01-02T03:04:05.", "2026-1-2", "2026-01-02T03:04:05 ", "2026-01-02T03:04:05z", "2026-01-02T",
        "2026-01-02X03:04:05", "2026-01-02T03:04:05+", "2026-01-02T03:04:05Z+00:00", "0000-01-01",
    ])
    func rejectsInvalid(text: String) {
        #expect(CeleryTimestamp(iso8601: text) == nil)
    }

    /// Python's `datetime.fromtimestamp(t, timezone.utc).isoformat()`, microseconds rounded half to even.
    @Test(arguments: [
        (0.0, "1970-01-01T00:00:00+00:00"),
        (1e-6, "1970-01-01T00:00:00.000001+00:00"),
        (-1e-6, "1969-12-31T23:59:59.999999+00:00"),
        (1.9999996, "1970-01-01T00:00:02+00:00"),
        (5e-7, "1970-01-01T00:00:00+00:00"),
        (1.5e-6, "1970-01-01T00:00:00.000002+00:00"),
        (2.5e-6, "1970-01-01T00:00:00.000002+00:00"),
        (-0.5, "1969-12-31T23:59:59.500000+00:00"),
        (951_782_400.0, "2000-02-29T00:00:00+00:00"),
        (-2_208_988_800.0, "1900-01-01T00:00:00+00:00"),
        (1_790_045_650.882025, "2026-09-22T02:54:10.882025+00:00"),
        (-62_135_596_800.0, "0001-01-01T00:00:00+00:00"),
    ])
    func formatsLikePython(seconds: Double, formatted: String) {
        #expect(CeleryTimestamp(secondsSince1970: seconds).iso8601 == formatted)
    }

    @Test func substringsParse() throws {
        let text = "eta=2026-01-02T03:04:05+00:00"
        let timestamp = try #require(CeleryTimestamp(iso8601: text.dropFirst(4)))
        #expect(timestamp.secondsSince1970 == 1_767_323_045)
    }

    @Test func ordersByTime() {
        let early = CeleryTimestamp(secondsSince1970: -5)
        let late = CeleryTimestamp(secondsSince1970: 10.5)
        #expect(early < late)
        #expect([late, early].sorted() == [early, late])
    }

    @Test func nowIsTheWallClock() throws {
        let now = CeleryTimestamp.now()
        // 2025-01-01 < now < 2100-01-01: a sanity bound, not a timing assertion.
        #expect(now.secondsSince1970 > 1_735_689_600)
        #expect(now.secondsSince1970 < 4_102_444_800)
        let reparsed = try #require(CeleryTimestamp(iso8601: now.iso8601))
        #expect(abs(reparsed.secondsSince1970 - now.secondsSince1970) < 1e-6)
    }

    @Test func everyDayOfFourCenturiesRoundTrips() throws {
        // 1800-01-01 to 2200-01-01 covers every leap-year rule, before and after the epoch.
        var seconds = -5_364_662_400.0
        var previousDay = ""
        while seconds < 7_258_118_400 {
            let text = CeleryTimestamp(secondsSince1970: seconds).iso8601
            #expect(text != previousDay)
            let reparsed = try #require(CeleryTimestamp(iso8601: text))
            #expect(reparsed.secondsSince1970 == seconds)
            previousDay = text
            seconds += 86_400
        }
    }

    @Test func nonFiniteIsWrittenAsItsNumber() {
        #expect(CeleryTimestamp(secondsSince1970: .nan).iso8601 == "nan")
        #expect(CeleryTimestamp(secondsSince1970: .infinity).iso8601 == "inf")
    }
}
