import Foundation
import RESP
import Redis
import TestSupport
import Testing

@testable import Beat

/// Beat embedded as one Service: it connects by itself, pushes what is due, and ends with its group.
@Suite(.enabled(if: TestServers.hasPlain, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct BeatServiceTests {
    @Test func anEmbeddedBeatPushesDueTasksAndEndsOnCancellation() async throws {
        let queue = TestServers.uniquePrefix("beat-service") + "q"
        let schedule = try BeatScheduleFile.parse(
            """
            entries:
              - name: every-second
                task: tasks.add
                schedule: 1
                args: [1, 2]
                options: {queue: \(queue)}
            """
        )
        let service = BeatService(
            configuration: .init(
                redis: try RedisConfiguration(url: try #require(TestServers.plainURL)),
                schedule: schedule,
                beat: BeatConfiguration(origin: "beat@test", token: "test:\(UUID().uuidString)"),
                keyPrefix: TestServers.uniquePrefix("beat-service") + "beat:"
            ),
            logger: TestServers.logger
        )
        let client = try TestServers.plainClient()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await service.run() }
            var length = 0
            let deadline = ContinuousClock.now + .seconds(10)
            while length == 0, ContinuousClock.now < deadline {
                length = try await client.send(RESPCommand("LLEN", queue)).int ?? 0
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(length >= 1)
            #expect(service.scheduler.isLeader)
            group.cancelAll()
            try? await group.waitForAll()
        }
        let message = try await client.send(RESPCommand("RPOP", queue))
        #expect(message.string?.contains("tasks.add") == true)
        await client.close()
    }
}
