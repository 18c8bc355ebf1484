import Logging
import NIOCore
import NIOEmbedded
import RESP
import Testing

@testable import Redis

@Suite struct RedisChannelHandlerTests {
    func makeChannel() throws -> (EmbeddedChannel, EmbeddedEventLoop) {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(
            RedisChannelHandler(eventLoop: loop, logger: Logger(label: "test"))
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return (channel, loop)
    }

    /// Writes one command through the channel and returns where its reply goes.
    func send(_ command: RESPCommand, on channel: EmbeddedChannel, deadline: NIODeadline) -> RedisReplies {
        let replies = RedisReplies(count: 1)
        channel.writeAndFlush(RedisRequest(commands: [command], replies: replies, deadline: deadline), promise: nil)
        return replies
    }

    /// The error that ended the wait for `replies`, nil if every reply came.
    func failure(_ replies: RedisReplies) async -> RedisError.Code? {
        do {
            _ = try await replies.wait()
            return nil
        } catch {
            return error.code
        }
    }

    @Test func pipelinedRepliesMatchInOrderAcrossFragments() async throws {
        let (channel, _) = try makeChannel()
        let replies = RedisReplies(count: 3)
        let commands = [RESPCommand("GET", "a"), RESPCommand("INCR", "b"), RESPCommand("PING")]
        channel.writeAndFlush(
            RedisRequest(commands: commands, replies: replies, deadline: .now() + .seconds(5)),
            promise: nil
        )
        // The exact bytes written: three commands, nothing else.
        var written = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { written.writeBuffer(&chunk) }
        #expect(
            String(buffer: written)
                == "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$4\r\nINCR\r\n$1\r\nb\r\n*1\r\n$4\r\nPING\r\n"
        )

        let text = "$3\r\nfoo\r\n:7\r\n+PONG\r\n"
        for byte in text.utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        let tokens = try await replies.wait()
        #expect(tokens.count == 3)
        #expect(tokens[0].string == "foo")
        #expect(tokens[1].int == 7)
        #expect(tokens[2].string == "PONG")
    }

    @Test func protocolErrorFailsEverythingAndCloses() async throws {
        let (channel, _) = try makeChannel()
        let replies = RedisReplies(count: 2)
        channel.writeAndFlush(
            RedisRequest(
                commands: [RESPCommand("PING"), RESPCommand("PING")],
                replies: replies,
                deadline: .now() + .seconds(5)
            ),
            promise: nil
        )
        try channel.writeInbound(ByteBuffer(string: "?garbage\r\n"))
        #expect(await failure(replies) == .protocolError)
        #expect(!channel.isActive)
    }

    @Test func commandTimeoutClosesTheConnection() async throws {
        let (channel, loop) = try makeChannel()
        let replies = send(RESPCommand("PING"), on: channel, deadline: loop.now + .milliseconds(50))
        loop.advanceTime(by: .milliseconds(100))
        #expect(await failure(replies) == .commandTimeout)
        #expect(!channel.isActive)
    }

    /// The timer armed for an answered command is left running; when it fires it arms again for the command now
    /// waiting, which still times out at its own deadline and not before.
    @Test func aLaterCommandTimesOutAtItsOwnDeadlineAfterAnAnsweredOne() async throws {
        let (channel, loop) = try makeChannel()
        let first = send(RESPCommand("PING"), on: channel, deadline: loop.now + .milliseconds(50))
        try channel.writeInbound(ByteBuffer(string: "+PONG\r\n"))
        #expect(try await first.wait()[0].string == "PONG")
        loop.advanceTime(by: .milliseconds(30))
        let second = send(RESPCommand("PING"), on: channel, deadline: loop.now + .milliseconds(50))
        // The first command's deadline passes: the second's has not.
        loop.advanceTime(by: .milliseconds(40))
        #expect(channel.isActive)
        loop.advanceTime(by: .milliseconds(20))
        #expect(await failure(second) == .commandTimeout)
        #expect(!channel.isActive)
    }

    /// After a blocking command (a late deadline) is answered, a plain command on the same connection still times
    /// out at its own, earlier deadline.
    @Test func aPlainCommandAfterABlockingOneTimesOutOnTime() async throws {
        let (channel, loop) = try makeChannel()
        let blocking = send(
            RESPCommand("BLMOVE", "a", "b", "LEFT", "RIGHT", "5"),
            on: channel,
            deadline: loop.now + .seconds(10)
        )
        try channel.writeInbound(ByteBuffer(string: "$-1\r\n"))
        #expect(try await blocking.wait()[0].isNull)
        let plain = send(RESPCommand("PING"), on: channel, deadline: loop.now + .milliseconds(50))
        loop.advanceTime(by: .milliseconds(60))
        #expect(await failure(plain) == .commandTimeout)
    }

    @Test func answeredCommandsLeaveNothingToTimeOut() async throws {
        let (channel, loop) = try makeChannel()
        for _ in 0..<3 {
            let replies = send(RESPCommand("PING"), on: channel, deadline: loop.now + .milliseconds(50))
            try channel.writeInbound(ByteBuffer(string: "+PONG\r\n"))
            #expect(try await replies.wait()[0].string == "PONG")
            loop.advanceTime(by: .milliseconds(20))
        }
        // The timer left armed fires with nothing waiting: the connection stays open.
        loop.advanceTime(by: .seconds(1))
        #expect(channel.isActive)
    }

    @Test func closeFailsPendingCommands() async throws {
        let (channel, _) = try makeChannel()
        let replies = send(RESPCommand("PING"), on: channel, deadline: .now() + .seconds(5))
        try await channel.close()
        #expect(await failure(replies) == .connectionClosed)
    }

    @Test func pushFramesGoToThePushHandler() async throws {
        let (channel, _) = try makeChannel()
        let handler = try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self)
        nonisolated(unsafe) var pushes: [String] = []
        handler.pushHandler = { result in
            if case .success(let push) = result { pushes.append(push.token.description) }
        }
        let replies = send(RESPCommand("GET", "k"), on: channel, deadline: .now() + .seconds(5))
        try channel.writeInbound(ByteBuffer(string: ">3\r\n+message\r\n+ch\r\n+hi\r\n$1\r\nv\r\n"))
        #expect(pushes == ["[\"message\", \"ch\", \"hi\"]"])
        #expect(try await replies.wait()[0].string == "v")
    }

    @Test func repliesCompleteInOrderAndAFailureEndsTheRest() async throws {
        let complete = RedisReplies(count: 2)
        complete.receive(try RESPToken(parsing: Array("+a\r\n".utf8)))
        complete.receive(try RESPToken(parsing: Array("+b\r\n".utf8)))
        complete.fail(RedisError(.connectionClosed, "too late: everything came"))
        #expect(try await complete.wait().map(\.string) == ["a", "b"])

        let partial = RedisReplies(count: 2)
        partial.receive(try RESPToken(parsing: Array("+a\r\n".utf8)))
        partial.fail(RedisError(.commandTimeout, "the second never came"))
        partial.fail(RedisError(.connectionClosed, "the first failure wins"))
        #expect(await failure(partial) == .commandTimeout)
    }

    @Test func aWaiterOnAnotherThreadIsWokenByTheLastReply() async throws {
        let replies = RedisReplies(count: 2)
        async let tokens = replies.wait()
        try await Task.sleep(for: .milliseconds(20))
        replies.receive(try RESPToken(parsing: Array(":1\r\n".utf8)))
        replies.receive(try RESPToken(parsing: Array(":2\r\n".utf8)))
        #expect(try await tokens.map(\.int) == [1, 2])
    }
}
