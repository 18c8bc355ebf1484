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

    @Test func pipelinedRepliesMatchInOrderAcrossFragments() throws {
        let (channel, loop) = try makeChannel()
        let promises = (0..<3).map { _ in loop.makePromise(of: RESPToken.self) }
        let commands = [RESPCommand("GET", "a"), RESPCommand("INCR", "b"), RESPCommand("PING")]
        channel.writeAndFlush(
            RedisRequest(commands: commands, promises: promises, deadline: .now() + .seconds(5)),
            promise: nil
        )
        // The exact bytes written: three commands, nothing else.
        var written = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { written.writeBuffer(&chunk) }
        #expect(
            String(buffer: written)
                == "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$4\r\nINCR\r\n$1\r\nb\r\n*1\r\n$4\r\nPING\r\n"
        )

        let replies = "$3\r\nfoo\r\n:7\r\n+PONG\r\n"
        for byte in replies.utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(try promises[0].futureResult.wait().string == "foo")
        #expect(try promises[1].futureResult.wait().int == 7)
        #expect(try promises[2].futureResult.wait().string == "PONG")
    }

    @Test func protocolErrorFailsEverythingAndCloses() throws {
        let (channel, loop) = try makeChannel()
        let promises = (0..<2).map { _ in loop.makePromise(of: RESPToken.self) }
        channel.writeAndFlush(
            RedisRequest(
                commands: [RESPCommand("PING"), RESPCommand("PING")],
                promises: promises,
                deadline: .now() + .seconds(5)
            ),
            promise: nil
        )
        try channel.writeInbound(ByteBuffer(string: "?garbage\r\n"))
        for promise in promises {
            #expect {
                try promise.futureResult.wait()
            } throws: { error in
                (error as? RedisError)?.code == .protocolError
            }
        }
        #expect(!channel.isActive)
    }

    @Test func commandTimeoutClosesTheConnection() throws {
        let (channel, loop) = try makeChannel()
        let promise = loop.makePromise(of: RESPToken.self)
        channel.writeAndFlush(
            RedisRequest(commands: [RESPCommand("PING")], promises: [promise], deadline: loop.now + .milliseconds(50)),
            promise: nil
        )
        loop.advanceTime(by: .milliseconds(100))
        #expect {
            try promise.futureResult.wait()
        } throws: { error in
            (error as? RedisError)?.code == .commandTimeout
        }
        #expect(!channel.isActive)
    }

    @Test func closeFailsPendingCommands() throws {
        let (channel, loop) = try makeChannel()
        let promise = loop.makePromise(of: RESPToken.self)
        channel.writeAndFlush(
            RedisRequest(commands: [RESPCommand("PING")], promises: [promise], deadline: .now() + .seconds(5)),
            promise: nil
        )
        try channel.close().wait()
        #expect {
            try promise.futureResult.wait()
        } throws: { error in
            (error as? RedisError)?.code == .connectionClosed
        }
    }

    @Test func pushFramesGoToThePushHandler() throws {
        let (channel, loop) = try makeChannel()
        let handler = try channel.pipeline.syncOperations.handler(type: RedisChannelHandler.self)
        nonisolated(unsafe) var pushes: [String] = []
        handler.pushHandler = { result in
            if case .success(let push) = result { pushes.append(push.token.description) }
        }
        let promise = loop.makePromise(of: RESPToken.self)
        channel.writeAndFlush(
            RedisRequest(commands: [RESPCommand("GET", "k")], promises: [promise], deadline: .now() + .seconds(5)),
            promise: nil
        )
        try channel.writeInbound(ByteBuffer(string: ">3\r\n+message\r\n+ch\r\n+hi\r\n$1\r\nv\r\n"))
        #expect(pushes == ["[\"message\", \"ch\", \"hi\"]"])
        #expect(try promise.futureResult.wait().string == "v")
    }
}
