import Logging
import NIOCore
import NIOPosix
import RESP
import TestSupport
import Testing

@testable import Redis

/// Tasks that prefer an `EventLoopTaskExecutor` run on its event loop, and stay there across suspensions.
struct EventLoopTaskExecutorTests {
    @Test func aPreferringTaskAndItsChildrenRunOnTheLoopAcrossSuspensions() async {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let executor = EventLoopTaskExecutor(eventLoop: loop)
        let seen = await withTaskExecutorPreference(executor) { () async -> [Bool] in
            var seen = [loop.inEventLoop]
            try? await Task.sleep(for: .milliseconds(5))
            seen.append(loop.inEventLoop)
            // A NIO future completed on another loop: the task resumes on its own loop, not the completing one.
            let other = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            _ = try? await other.next().submit { 1 }.get()
            seen.append(loop.inEventLoop)
            try? await other.shutdownGracefully()
            seen.append(
                await withTaskGroup(of: Bool.self) { group in
                    group.addTask { loop.inEventLoop }
                    return await group.next() ?? false
                }
            )
            return seen
        }
        #expect(seen == [true, true, true, true])
        // Without the preference the same code runs on Swift's global executor.
        try? await Task.sleep(for: .milliseconds(1))
        #expect(!loop.inEventLoop)
    }
}

@Suite(.enabled(if: TestServers.hasPlain, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct EventLoopTaskExecutorRedisTests {
    /// What the worker relies on: its connections on the loop, a reply resumes the waiting task on that loop.
    @Test func repliesResumeATaskOnItsConnectionsLoop() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let client = RedisClient(
            configuration: try RedisConfiguration(url: TestServers.plainURL!),
            eventLoopGroup: loop,
            logger: Logger(label: "test")
        )
        let key = TestServers.uniquePrefix() + "executor"
        let outcome = try await withTaskExecutorPreference(EventLoopTaskExecutor(eventLoop: loop)) {
            () async throws -> [Bool] in
            var onLoop: [Bool] = []
            for i in 1...20 {
                let reply = try await client.send(RESPCommand("INCR", key))
                onLoop.append(loop.inEventLoop && reply.int == i)
            }
            let connection = try await client.makeConnection()
            let popped = try await connection.sendBlocking(
                RESPCommand("BLPOP", key + ":list", "0.05"),
                blockingTimeout: .milliseconds(50)
            )
            onLoop.append(loop.inEventLoop && popped.isNull)
            await connection.close()
            return onLoop
        }
        #expect(outcome == Array(repeating: true, count: 21))
        await client.close()
    }
}
