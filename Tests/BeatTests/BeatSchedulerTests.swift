import Foundation
import JSON
import Logging
import RESP
import Redis
import Synchronization
import TestSupport
import Testing

@testable import Beat
@testable import CeleryProtocol

/// A clock that jumps to each wake-up time at once; sleeping past `end` ends the loop.
final class VirtualClock: BeatClock {
    private let time: Mutex<Int64>
    let end: Int64

    init(start: Int64, end: Int64) {
        time = Mutex(start)
        self.end = end
    }

    func now() -> Int64 { time.withLock { $0 } }

    func advance(to instant: Int64) { time.withLock { $0 = max($0, instant) } }

    func sleep(until deadline: Int64) async throws {
        guard deadline <= end else { throw CancellationError() }
        advance(to: deadline)
        await Task.yield()
    }
}

let start2030 = ms("2030-01-01T00:00:00Z")

@Suite(.enabled(if: TestServers.hasPlain, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct BeatSchedulerTests {
    let client: RedisClient
    let prefix: String
    let queue: String

    init() throws {
        client = try TestServers.plainClient()
        prefix = TestServers.uniquePrefix("beat") + "beat:"
        queue = "beat-test-\(UUID().uuidString.prefix(8))"
    }

    func entry(_ name: String, every milliseconds: Int64, queue: String? = nil) -> BeatEntry {
        var entry = BeatEntry(name: name, task: "tasks.add", schedule: .interval(milliseconds: milliseconds))
        entry.args = [1, 2]
        entry.queue = queue ?? self.queue
        return entry
    }

    func scheduler(
        _ entries: [BeatEntry],
        clock: some BeatClock,
        token: String = UUID().uuidString,
        deadline: Int64? = nil,
        reload: @escaping @Sendable () throws(BeatError) -> BeatScheduleFile = { () throws(BeatError) in
            BeatScheduleFile(entries: [])
        }
    ) -> BeatScheduler {
        var configuration = BeatConfiguration(origin: "beat@test", token: token)
        configuration.lockTimeout = 60_000
        configuration.maximumSleep = 60_000
        configuration.startingDeadline = deadline
        configuration.historyLimit = 10_000
        return BeatScheduler(
            configuration: configuration,
            schedule: BeatScheduleFile(entries: entries),
            state: BeatRedisState(client: client, prefix: prefix),
            clock: clock,
            logger: TestServers.logger,
            reload: reload
        )
    }

    /// History records (oldest first) of one entry.
    func history(_ name: String) async throws -> [JSONValue] {
        let reply = try await client.send(RESPCommand("LRANGE", prefix + "history", "0", "-1"))
        return try (reply.array ?? []).reversed().map { try JSONValue(parsing: $0.string ?? "") }
            .filter { $0["entry"]?.stringValue == name }
    }

    func queued(_ list: String) async throws -> [JSONValue] {
        let reply = try await client.send(RESPCommand("LRANGE", list, "0", "-1"))
        return try (reply.array ?? []).map { try JSONValue(parsing: $0.string ?? "") }
    }

    @Test func loopFiresEverySlotOnceOnTimeInVirtualTime() async throws {
        let cronQueue = queue + "-cron"
        var minutely = BeatEntry(
            name: "minutely",
            task: "tasks.echo",
            schedule: .crontab(try Crontab(expression: "* * * * *"))
        )
        minutely.queue = cronQueue
        let clock = VirtualClock(start: start2030, end: start2030 + 600_000)
        try await scheduler([entry("every10", every: 10_000), minutely], clock: clock).run()

        let records = try await history("every10")
        #expect(records.compactMap { $0["due_ms"]?.intValue } == (1...60).map { Int(start2030) + $0 * 10_000 })
        #expect(records.allSatisfy { $0["sent_ms"] == $0["due_ms"] })
        let messages = try await queued(queue)
        #expect(messages.count == 60)
        #expect(
            Set(messages.compactMap { $0["headers"]?["id"]?.stringValue })
                == Set(records.compactMap { $0["id"]?.stringValue })
        )
        let cron = try await history("minutely")
        #expect(cron.compactMap { $0["due_ms"]?.intValue } == (1...10).map { Int(start2030) + $0 * 60_000 })
        #expect(try await queued(cronQueue).count == 10)
        // The lock was released on the way out.
        #expect(try await client.send(RESPCommand("EXISTS", prefix + "lock")).int == 0)
        let runs = try await client.send(RESPCommand("HGET", prefix + "entry:every10", "total_run_count"))
        #expect(runs.string == "60")
    }

    @Test func aRestartNeitherSkipsNorDoublesASlot() async throws {
        let entries = [entry("every10", every: 10_000)]
        try await scheduler(entries, clock: VirtualClock(start: start2030, end: start2030 + 35_000)).run()
        try await scheduler(entries, clock: VirtualClock(start: start2030 + 35_000, end: start2030 + 100_000)).run()
        let records = try await history("every10")
        let dues = records.compactMap { $0["due_ms"]?.intValue }
        // Every 10 s across the restart at 35 s: no gap, no slot twice. (The first slot is 10 s after the first
        // successful sync: a Redis hiccup on a loaded machine delays that sync, and every slot, by its retry.)
        #expect(dues.count >= 9)
        #expect(zip(dues, dues.dropFirst()).allSatisfy { $1 - $0 == 10_000 })
        #expect((dues.first ?? 0) - Int(start2030) >= 10_000 && (dues.first ?? 0) - Int(start2030) < 20_000)
        #expect((dues.last ?? 0) > Int(start2030) + 90_000)
        #expect(records.allSatisfy { $0["collapsed"] == false })
        #expect(try await queued(queue).count == dues.count)
    }

    @Test func missedSlotsCollapseIntoOneRun() async throws {
        let entries = [entry("every10", every: 10_000)]
        try await scheduler(entries, clock: VirtualClock(start: start2030, end: start2030 + 15_000)).run()
        // Nobody ran between 15 s and 105 s: slots 20 … 100 collapse into one run at 105 s.
        try await scheduler(entries, clock: VirtualClock(start: start2030 + 105_000, end: start2030 + 115_000)).run()
        let records = try await history("every10")
        #expect(records.compactMap { $0["due_ms"]?.intValue } == [10_000, 20_000, 110_000].map { Int(start2030) + $0 })
        #expect(
            records.compactMap { $0["sent_ms"]?.intValue } == [10_000, 105_000, 110_000].map { Int(start2030) + $0 }
        )
        #expect(records.compactMap { $0["collapsed"]?.boolValue } == [false, true, false])
        #expect(try await queued(queue).count == 3)
    }

    @Test func aMissedSlotPastTheStartingDeadlineIsSkipped() async throws {
        let entries = [entry("every10", every: 10_000)]
        try await scheduler(entries, clock: VirtualClock(start: start2030, end: start2030 + 15_000)).run()
        // The latest missed slot (100 s) is 5 s old at 105 s: past a 3 s deadline.
        try await scheduler(
            entries,
            clock: VirtualClock(start: start2030 + 105_000, end: start2030 + 115_000),
            deadline: 3_000
        ).run()
        let records = try await history("every10")
        #expect(records.compactMap { $0["due_ms"]?.intValue } == [10_000, 110_000].map { Int(start2030) + $0 })
        let skipped = try await client.send(RESPCommand("HGET", prefix + "entry:every10", "last_skipped_at"))
        #expect(skipped.string == String(start2030 + 105_000))
    }

    @Test func oneOfTwoLeadsAndAChangeOfLeaderDoublesNoSlot() async throws {
        let entries = [entry("every1", every: 1_000)]
        let clock = VirtualClock(start: start2030, end: .max)
        let first = scheduler(entries, clock: clock, token: "first")
        let second = scheduler(entries, clock: clock, token: "second")
        for tick in 1...20 {
            clock.advance(to: start2030 + Int64(tick) * 1_000)
            if tick == 10 {
                // The leader's lock expires (as if it had died); the other takes over at its next step.
                try await client.send(RESPCommand("DEL", prefix + "lock"))
            }
            let a = tick < 10 || tick > 12 ? await first.step() : nil  // `first` is paused for ticks 10–12
            let b = await second.step()
            #expect([a?.leader ?? false, b.leader].filter { $0 }.count <= 1)
        }
        #expect(!first.isLeader)
        // Redis loses everything (restart without persistence): the leader notices its lock gone and syncs again.
        try await client.send(RESPCommand("DEL", prefix + "lock", prefix + "schedule", prefix + "entry:every1"))
        clock.advance(to: start2030 + 40_000)  // past the renewal interval
        await second.step()
        #expect(try await BeatRedisState(client: client, prefix: prefix).dueTime(of: "every1") == start2030 + 41_000)
        #expect(second.isLeader)
        let records = try await history("every1")
        let dues = records.compactMap { $0["due_ms"]?.intValue }
        // Synced at the first tick (1 s), so the first slot is 2 s; then every second, each once.
        #expect(dues == (2...20).map { Int(start2030) + $0 * 1_000 })
        #expect(Set(records.compactMap { $0["leader"]?.stringValue }) == ["first", "second"])
        #expect(try await queued(queue).count == 19)
    }

    @Test func theFireStepIsAtomicAndRefusesStaleOrForeignCalls() async throws {
        let state = BeatRedisState(client: client, prefix: prefix)
        #expect(try await state.acquire(token: "me", timeout: 30_000) == .taken)
        #expect(try await state.acquire(token: "me", timeout: 30_000) == .extended)
        #expect(try await state.acquire(token: "other", timeout: 30_000) == .heldByAnother)
        let entries = [entry("e", every: 5_000)]
        let outcomes = try await state.sync(entries, now: 1_000, token: "me")
        #expect(outcomes["e"] == .scheduled(6_000))
        func step(_ due: Int64) -> BeatRedisState.Fire {
            BeatRedisState.Fire(
                name: "e",
                expectedDue: due,
                nextDue: due + 5_000,
                firedAt: due,
                message: (queue, queue, Array(#"{"body": "x"}"#.utf8)),
                record: "{}"
            )
        }
        #expect(try await state.fire([step(6_000)], token: "me", historyLimit: 10) == [.sent])
        #expect(try await state.fire([step(6_000)], token: "me", historyLimit: 10) == [.stale])
        await #expect(throws: BeatError.self) {
            try await state.fire([step(11_000)], token: "other", historyLimit: 10)
        }
        #expect(try await state.dueTime(of: "e") == 11_000)
        #expect(try await queued(queue).count == 1)
        // Bindings as kombu declares them, so Python's restore and `celery purge` know the queue.
        let binding = try await client.send(
            RESPCommand("SISMEMBER", "_kombu.binding.\(queue)", "\(queue)\u{06}\u{16}\u{06}\u{16}\(queue)")
        )
        #expect(binding.int == 1)
        // A sync with the same schedule keeps the due time (restart); a changed schedule is due anew.
        #expect(try await state.sync(entries, now: 9_000, token: "me")["e"] == .kept(11_000))
        #expect(try await state.sync([entry("e", every: 7_000)], now: 9_000, token: "me")["e"] == .scheduled(16_000))
        try await state.release(token: "other")
        #expect(try await client.send(RESPCommand("GET", prefix + "lock")).string == "me")
        try await state.release(token: "me")
        #expect(try await client.send(RESPCommand("EXISTS", prefix + "lock")).int == 0)
    }

    @Test func aFlushedScriptCacheIsReloadedAndNoStepRunsTwice() async throws {
        let state = BeatRedisState(client: client, prefix: prefix)
        #expect(try await state.acquire(token: "me", timeout: 30_000) == .taken)
        #expect(try await state.sync([entry("e", every: 5_000)], now: 1_000, token: "me")["e"] == .scheduled(6_000))
        // Redis loses its scripts (SCRIPT FLUSH, or a restart that kept the data): the next steps load them again.
        try await client.send(RESPCommand("SCRIPT", "FLUSH"))
        let step = BeatRedisState.Fire(
            name: "e",
            expectedDue: 6_000,
            nextDue: 11_000,
            firedAt: 6_000,
            message: (queue, queue, Array(#"{"body": "x"}"#.utf8)),
            record: "{}"
        )
        #expect(try await state.fire([step], token: "me", historyLimit: 10) == [.sent])
        try await client.send(RESPCommand("SCRIPT", "FLUSH"))
        #expect(try await state.sync([entry("e", every: 5_000)], now: 7_000, token: "me")["e"] == .kept(11_000))
        #expect(try await queued(queue).count == 1)
        try await state.release(token: "me")
    }

    @Test func reloadAddsChangesAndRemovesEntries() async throws {
        let next = Mutex<BeatScheduleFile>(BeatScheduleFile(entries: []))
        let clock = VirtualClock(start: start2030, end: .max)
        let beat = scheduler(
            [entry("kept", every: 10_000), entry("changed", every: 10_000), entry("removed", every: 10_000)],
            clock: clock,
            reload: { () throws(BeatError) in next.withLock { $0 } }
        )
        // The first step syncs (beat's run loop gives memory back after it); a quiet one does not.
        #expect(await beat.step().synced)
        let state = BeatRedisState(client: client, prefix: prefix)
        #expect(try await state.dueTime(of: "removed") == start2030 + 10_000)
        clock.advance(to: start2030 + 4_000)
        #expect(await !beat.step().synced)
        var disabled = entry("disabled", every: 1_000)
        disabled.enabled = false
        next.withLock {
            $0 = BeatScheduleFile(entries: [
                entry("kept", every: 10_000), entry("changed", every: 30_000), entry("added", every: 2_000), disabled,
            ])
        }
        beat.requestReload()
        #expect(await beat.step().synced)
        #expect(try await state.dueTime(of: "kept") == start2030 + 10_000)
        #expect(try await state.dueTime(of: "changed") == start2030 + 34_000)
        #expect(try await state.dueTime(of: "added") == start2030 + 6_000)
        #expect(try await state.dueTime(of: "disabled") == nil)
        #expect(try await state.dueTime(of: "removed") == nil)
        #expect(try await client.send(RESPCommand("EXISTS", prefix + "entry:removed")).int == 0)
        // A reload that fails keeps the schedule in use.
        let failing = scheduler([entry("kept", every: 10_000)], clock: clock) { () throws(BeatError) in
            throw BeatError(.invalidSchedule, "entry 'x': schedule: bad")
        }
        failing.requestReload()
        await failing.step()
        #expect(failing.schedule.entries.map(\.name) == ["kept"])
    }

    @Test func unreachableRedisIsLoggedAndRetriedNotACrash() async throws {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(TestServers.freePort())/0")
        configuration.connectTimeout = .seconds(1)
        let offline = RedisClient(configuration: configuration, logger: TestServers.logger)
        let clock = VirtualClock(start: start2030, end: .max)
        let beat = BeatScheduler(
            configuration: BeatConfiguration(origin: "beat@test", token: "t"),
            schedule: BeatScheduleFile(entries: [entry("e", every: 1_000)]),
            state: BeatRedisState(client: offline, prefix: prefix),
            clock: clock,
            logger: TestServers.logger,
            reload: { () throws(BeatError) in BeatScheduleFile(entries: []) }
        )
        for _ in 0..<3 {
            let report = await beat.step()
            #expect(!report.leader)
            #expect(report.sent.isEmpty)
            #expect(report.wake > clock.now())  // it waits (with backoff) before trying again
        }
        #expect(!beat.isLeader)
    }
}
