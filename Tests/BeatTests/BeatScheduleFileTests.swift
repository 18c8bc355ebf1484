import Foundation
import JSON
import Testing

@testable import Beat
@testable import CeleryProtocol

@Suite struct BeatScheduleFileTests {
    @Test func readsEveryFormOfEntry() throws {
        let file = try BeatScheduleFile.parse(
            """
            timezone: Europe/Berlin
            starting_deadline: 5m
            entries:
              - name: add
                task: tasks.add
                schedule: 30
                args: [2, 3]
              - name: units
                task: tasks.echo
                schedule: "1h30m"
                kwargs: {k: v, n: 1.5, flag: true, none: null, list: [1, "2"]}
              - name: every
                task: tasks.echo
                schedule: {every: 5s}
                enabled: false
              - name: nightly
                task: reports.nightly
                schedule: {crontab: "0 3 * * mon-fri", timezone: America/New_York}
                options: {queue: reports, priority: 5, expires: 30, headers: {x-team: data}, time_limit: 60,
                          soft_time_limit: 50}
              - name: fields
                task: py.only.task
                schedule: {minute: "*/15", hour: 9-17, day_of_week: mon-fri}
            """
        )
        #expect(file.startingDeadline == 300_000)
        #expect(file.entries.map(\.name) == ["add", "units", "every", "nightly", "fields"])
        let add = file.entries[0]
        #expect(add.schedule == .interval(milliseconds: 30_000))
        #expect(add.args == [2, 3])
        #expect(add.queue == "celery")
        let units = file.entries[1]
        #expect(units.schedule == .interval(milliseconds: 5_400_000))
        #expect(units.kwargs == ["k": "v", "n": 1.5, "flag": true, "none": .null, "list": [1, "2"]])
        #expect(!file.entries[2].enabled)
        let nightly = file.entries[3]
        guard case .crontab(let crontab) = nightly.schedule else {
            Issue.record("nightly is not a crontab")
            return
        }
        #expect(crontab.timeZone.identifier == "America/New_York")
        #expect(nightly.queue == "reports")
        #expect(nightly.priority == 5)
        #expect(nightly.expires == .after(seconds: 30))
        #expect(nightly.headers == ["x-team": "data"])
        #expect(nightly.timeLimit == 60)
        #expect(nightly.softTimeLimit == 50)
        guard case .crontab(let fields) = file.entries[4].schedule else {
            Issue.record("fields is not a crontab")
            return
        }
        #expect(fields.timeZone.identifier == "Europe/Berlin")  // the file's default zone
        #expect(fields.minute == "*/15")
        #expect(fields.hour == "9-17")
    }

    @Test func readsJSONAndMappingOfEntries() throws {
        let file = try BeatScheduleFile.parse(
            """
            {"entries": {"a": {"task": "tasks.add", "schedule": "10s", "args": [1, 2]},
                         "b": {"task": "tasks.mul", "schedule": {"hour": "3", "minute": "0"}}}}
            """
        )
        #expect(file.entries.map(\.name) == ["a", "b"])
        #expect(file.entries[0].schedule == .interval(milliseconds: 10_000))
    }

    struct Bad: CustomTestStringConvertible, Sendable {
        var yaml: String
        var mentions: [String]
        var testDescription: String { mentions.joined(separator: " ") }
    }

    static let bad: [Bad] = [
        .init(yaml: "entries:\n  - name: a\n    schedule: 5\n", mentions: ["entry 'a'", "task", "missing"]),
        .init(yaml: "entries:\n  - task: t\n    schedule: 5\n", mentions: ["name", "missing"]),
        .init(yaml: "entries:\n  - name: a\n    task: t\n", mentions: ["entry 'a'", "schedule", "missing"]),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: 5x\n",
            mentions: ["entry 'a'", "line 4", "schedule", "5x"]
        ),
        .init(yaml: "entries:\n  - name: a\n    task: t\n    schedule: 0\n", mentions: ["entry 'a'", "positive"]),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: {hour: 25}\n",
            mentions: ["entry 'a'", "schedule.hour", "25"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: {crontab: '* * *'}\n",
            mentions: ["entry 'a'", "schedule.crontab", "5"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: {crontab: '0 0 * * *', timezone: Mars/Olympus}\n",
            mentions: ["entry 'a'", "schedule.timezone", "Mars/Olympus"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: {hourly: 1}\n",
            mentions: ["entry 'a'", "schedule.hourly", "unknown"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    tsk: t\n    schedule: 5\n",
            mentions: ["entry 'a'", "tsk", "unknown field"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: 5\n    options: {priority: 12}\n",
            mentions: ["entry 'a'", "options.priority", "0 to 9"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: 5\n    options: {queeue: x}\n",
            mentions: ["entry 'a'", "options.queeue", "unknown option"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: 5\n    options: {expires: soon}\n",
            mentions: ["entry 'a'", "options.expires"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: 5\n    args: {x: 1}\n",
            mentions: ["entry 'a'", "args", "list"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: 5\n    kwargs: [1]\n",
            mentions: ["entry 'a'", "kwargs", "mapping"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: 5\n    enabled: maybe\n",
            mentions: ["entry 'a'", "enabled", "true or false"]
        ),
        .init(
            yaml: "entries:\n  - name: a\n    task: t\n    schedule: 5\n  - name: a\n    task: u\n    schedule: 6\n",
            mentions: ["entry 'a'", "unique"]
        ),
        .init(yaml: "entries:\n  - name: a\n    task: [t]\n    schedule: 5\n", mentions: ["entry 'a'", "task"]),
        .init(yaml: "entrys: []\n", mentions: ["entrys", "unknown top-level key"]),
        .init(yaml: "timezone: Nowhere/Land\nentries: []\n", mentions: ["timezone", "Nowhere/Land"]),
        .init(yaml: "entries: [\n", mentions: ["not valid YAML"]),
        .init(yaml: "", mentions: ["empty"]),
        .init(yaml: "42\n", mentions: ["mapping"]),
    ]

    @Test(arguments: bad)
    func aBadEntryNamesTheEntryAndTheField(_ row: Bad) {
        do {
            let file = try BeatScheduleFile.parse(row.yaml)
            Issue.record("accepted: \(file)")
        } catch {
            #expect(error.code == .invalidSchedule)
            for word in row.mentions {
                #expect(error.message.contains(word), "'\(error.message)' should mention \(word)")
            }
        }
    }

    @Test func theDocumentedExampleParses() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../docs/beat.example.yaml").standardized.path
        let file = try BeatScheduleFile.load(path: path)
        #expect(file.entries.count == 5)
        #expect(file.entries.filter(\.enabled).count == 4)
        #expect(file.entries[4].task == "reports.nightly")
    }

    @Test func aMissingFileIsAClearError() {
        #expect {
            try BeatScheduleFile.load(path: "/nonexistent/beat.yaml")
        } throws: { error in
            guard let error = error as? BeatError else { return false }
            return error.code == .unreadableFile && error.message.contains("/nonexistent/beat.yaml")
        }
    }

    /// The message matches what Celery 5.7 beat put on Redis (captured, docs/protocol.md §6).
    @Test func messageIsCeleryBeats() throws {
        let file = try BeatScheduleFile.parse(
            """
            entries:
              - name: cron
                task: tasks.echo
                schedule: {crontab: "* * * * *"}
                args: [x]
                kwargs: {k: 1}
                options: {queue: cronq, priority: 5, expires: 30, headers: {x-h: v}}
            """
        )
        let now = CeleryTimestamp(iso8601: "2026-11-22T05:55:00.003764+00:00")!
        let task = file.entries[0].message(origin: "gen2606@vm", replyTo: "r", id: "id-1", now: now)
        #expect(task.list == "cronq\u{06}\u{16}3")
        let envelope = try JSONValue(parsing: task.beatEnvelope(deliveryTag: "tag", now: now))
        let headers = try #require(envelope["headers"]?.objectValue)
        #expect(
            Array(headers.keys) == [
                "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit",
                "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result", "replaced_task_nesting",
                "stamped_headers", "stamps", "x-h", "celery_beat_task",
            ]
        )
        #expect(headers["argsrepr"] == "['x']")
        #expect(headers["kwargsrepr"] == "{'k': 1}")
        #expect(headers["ignore_result"] == .null)
        #expect(headers["celery_beat_task"] == true)
        #expect(headers["expires"] == "2026-11-22T05:55:30.003764+00:00")
        #expect(headers["root_id"] == "id-1")
        let properties = try #require(envelope["properties"])
        #expect(properties["expiration"] == "30000")
        #expect(properties["priority"] == 5)
        #expect(properties["delivery_info"] == ["exchange": "", "routing_key": "cronq"])
        #expect(properties["delivery_tag"] == "tag")
        #expect(properties["correlation_id"] == "id-1")
        #expect(envelope["content-type"] == "application/json")
        let encoded = try #require(envelope["body"]?.stringValue)
        let body = try #require(Data(base64Encoded: encoded))
        #expect(
            try JSONValue(parsing: Array(body))
                == [["x"], ["k": 1], ["callbacks": .null, "errbacks": .null, "chain": .null, "chord": .null]]
        )
    }
}
