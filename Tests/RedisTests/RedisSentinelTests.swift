import Foundation
import Logging
import NIOCore
import RESP
import TestSupport
import Testing

@testable import Redis

/// Against the master, replica and three sentinels that scripts/test-redis.sh starts (scripts/test-sentinel.sh).
/// Serialized: the last test fails the master over, which the others must not see half done.
@Suite(.serialized, .enabled(if: TestServers.hasSentinel, "needs the Sentinel deployment of scripts/test-redis.sh"))
struct RedisSentinelTests {
    static func configuration(_ change: (inout RedisConfiguration) -> Void = { _ in }) throws -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: TestServers.sentinelFullURL!)
        change(&configuration)
        return configuration
    }

    /// The master's port as the first sentinel names it, asked on a plain connection.
    static func masterPortFromSentinel() async throws -> Int {
        let configuration = RedisConfiguration(
            endpoint: .tcp(host: "127.0.0.1", port: TestServers.sentinelPorts[0]),
            password: TestServers.sentinelPassword
        )
        let connection = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
        let reply = try await connection.send(
            RESPCommand("SENTINEL", "get-master-addr-by-name", TestServers.sentinelMasterName!)
        )
        await connection.close()
        return try #require(reply.array?.last?.string.flatMap(Int.init))
    }

    @Test func discoversTheMasterAndChecksItsRole() async throws {
        let client = RedisClient(configuration: try Self.configuration(), logger: TestServers.logger)
        let key = TestServers.uniquePrefix() + "k"
        try await client.send(RESPCommand("SET", key, "v", "EX", 60))
        #expect(try await client.send(RESPCommand("GET", key)).string == "v")
        #expect(try await client.send(RESPCommand("ROLE")).array?.first?.string == "master")
        let connection = try await client.connection()
        #expect(
            connection.configuration.endpoint == .tcp(host: "127.0.0.1", port: try await Self.masterPortFromSentinel())
        )
        await client.close()
    }

    @Test func sentinelsThatDoNotAnswerAreSkipped() async throws {
        let refused = try await TestServers.refusedPort()
        let configuration = try Self.configuration {
            $0.sentinel?.sentinels.insert(.init(host: "127.0.0.1", port: refused), at: 0)
        }
        let connection = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
        #expect(try await connection.send(RESPCommand("PING")).string == "PONG")
        await connection.close()
    }

    @Test func noSentinelAnswering() async throws {
        let configuration = try Self.configuration {
            $0.sentinel?.sentinels = [.init(host: "127.0.0.1", port: TestServers.freePort())]
            $0.connectTimeout = .milliseconds(600)
        }
        do {
            _ = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
            Issue.record("connected with no sentinel running")
        } catch {
            #expect(error.code == .connectionRefused)
            #expect(error.message.contains("no sentinel named the master"))
        }
    }

    @Test func unknownMasterName() async throws {
        let configuration = try Self.configuration { $0.sentinel?.masterName = "no-such-master" }
        do {
            _ = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
            Issue.record("connected to a master no sentinel knows")
        } catch {
            #expect(error.message.contains("no sentinel knows a master named 'no-such-master'"))
        }
    }

    @Test func missingMasterName() async throws {
        let configuration = try Self.configuration { $0.sentinel?.masterName = nil }
        await #expect(throws: RedisError.self) {
            _ = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
        }
    }

    @Test func wrongSentinelPassword() async throws {
        let configuration = try Self.configuration { $0.sentinel?.password = "wrong" }
        do {
            _ = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
            Issue.record("a sentinel accepted a wrong password")
        } catch {
            #expect(error.code == .authenticationFailed)
            #expect(error.message.contains("sentinel 127.0.0.1:"))
            #expect(!error.description.contains(TestServers.sentinelPassword!))
        }
    }

    @Test func wrongMasterPassword() async throws {
        let configuration = try Self.configuration { $0.password = "wrong" }
        do {
            _ = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
            Issue.record("the master accepted a wrong password")
        } catch {
            #expect(error.code == .authenticationFailed)
        }
    }

    /// A connection to a replica (what a demoted master is) closes on READONLY, so it is made again.
    @Test func readOnlyReplyClosesTheConnection() async throws {
        let masterPort = try await Self.masterPortFromSentinel()
        let replicaPort = try #require(TestServers.sentinelRedisPorts.first { $0 != masterPort })
        let configuration = RedisConfiguration(
            endpoint: .tcp(host: "127.0.0.1", port: replicaPort),
            password: TestServers.sentinelMasterPassword
        )
        let connection = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
        #expect(try await connection.send(RESPCommand("ROLE")).array?.first?.string == "slave")
        do {
            try await connection.send(RESPCommand("SET", TestServers.uniquePrefix() + "k", "v"))
            Issue.record("a replica accepted a write")
        } catch {
            #expect(error.serverErrorPrefix == "READONLY")
        }
        // Closed right after the reply (bounded, so that a connection left open fails rather than hangs).
        let deadline = ContinuousClock.now + .seconds(10)
        while connection.isActive, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!connection.isActive)
        await connection.close()
    }

    /// `SENTINEL FAILOVER`: the connection to the old master is closed on `+switch-master` (or READONLY, or the
    /// old master's CLIENT KILL), and the client's next command reaches the new master.
    @Test func followsAFailover() async throws {
        let client = RedisClient(configuration: try Self.configuration(), logger: TestServers.logger)
        let key = TestServers.uniquePrefix() + "k"
        try await client.send(RESPCommand("SET", key, "before", "EX", 60))
        let oldConnection = try await client.connection()
        let oldPort = try await Self.masterPortFromSentinel()

        let sentinel = try await RedisConnection.connect(
            configuration: RedisConfiguration(
                endpoint: .tcp(host: "127.0.0.1", port: TestServers.sentinelPorts[1]),
                password: TestServers.sentinelPassword
            ),
            logger: TestServers.logger
        )
        // A failover right after another, or before the replica has synced, is refused for a while: retry.
        var started = false
        for _ in 0..<100 where !started {
            do {
                _ = try await sentinel.send(RESPCommand("SENTINEL", "FAILOVER", TestServers.sentinelMasterName!))
                started = true
            } catch {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        await sentinel.close()
        try #require(started)

        // Generous: the failover itself takes a few seconds on a loaded machine.
        let deadline = ContinuousClock.now + .seconds(30)
        while oldConnection.isActive, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(!oldConnection.isActive)
        var newPort = oldPort
        while newPort == oldPort, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            newPort = try await Self.masterPortFromSentinel()
        }
        #expect(newPort != oldPort)
        // Writes work again on the new master (retry: the client may still be between the two).
        var written = false
        while !written, ContinuousClock.now < deadline {
            do {
                try await client.send(RESPCommand("SET", key, "after", "EX", 60))
                written = true
            } catch {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(written)
        let connection = try await client.connection()
        #expect(connection.configuration.endpoint == .tcp(host: "127.0.0.1", port: newPort))
        #expect(try await client.send(RESPCommand("GET", key)).string == "after")
        await client.close()
    }

    /// Sends one command to a sentinel (`port`) or, with `data: true`, to a data server, and closes.
    static func command(_ port: Int, data: Bool = false, _ command: RESPCommand) async throws -> RESPToken {
        let connection = try await RedisConnection.connect(
            configuration: RedisConfiguration(
                endpoint: .tcp(host: "127.0.0.1", port: port),
                password: data ? TestServers.sentinelMasterPassword : TestServers.sentinelPassword
            ),
            logger: TestServers.logger
        )
        do {
            let reply = try await connection.send(command)
            await connection.close()
            return reply
        } catch {
            await connection.close()
            throw error
        }
    }

    /// celery#7946: a master demoted while a client stays connected to it (here by hand, with no `+switch-master`
    /// reaching the client and before the sentinels' CLIENT KILL) answers READONLY; the client must leave it and
    /// find the new master at once, not answer READONLY until something else closes the connection.
    @Test func aDemotedMasterIsLeftOnReadOnly() async throws {
        let client = RedisClient(configuration: try Self.configuration(), logger: TestServers.logger)
        let key = TestServers.uniquePrefix() + "k"
        try await client.send(RESPCommand("SET", key, "before", "EX", 60))
        let connection = try await client.connection()
        let oldPort = try await Self.masterPortFromSentinel()
        #expect(connection.configuration.endpoint == .tcp(host: "127.0.0.1", port: oldPort))

        // Cut this process's +switch-master subscription, so that only READONLY can tell the client.
        for port in TestServers.sentinelPorts {
            _ = try await Self.command(port, RESPCommand("CLIENT", "KILL", "TYPE", "pubsub"))
        }
        // Generous: a failover soon after another waits until the old master has become a synced replica.
        let deadline = ContinuousClock.now + .seconds(60)
        var failedOver = false
        while !failedOver, ContinuousClock.now < deadline {
            do {
                _ = try await Self.command(
                    TestServers.sentinelPorts[0],
                    RESPCommand("SENTINEL", "FAILOVER", TestServers.sentinelMasterName!)
                )
                failedOver = true
            } catch {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        try #require(failedOver)
        var newPort = oldPort
        while newPort == oldPort, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            newPort = try await Self.masterPortFromSentinel()
        }
        try #require(newPort != oldPort)
        // What the sentinels will do to the old master, without the CLIENT KILL that comes with it.
        _ = try await Self.command(oldPort, data: true, RESPCommand("REPLICAOF", "127.0.0.1", newPort))

        do {
            try await client.send(RESPCommand("SET", key, "during", "EX", 60))
            // The sentinels' own reconfiguration got there first and closed the connection: recovered as well.
        } catch {
            #expect(error.serverErrorPrefix == "READONLY" || error.code == .connectionClosed)
        }
        // The very next command reaches the new master: no retrying here, or the sentinels' own CLIENT KILL of the
        // old master's clients (seconds later) would hide a client that stayed.
        try await client.send(RESPCommand("SET", key, "after", "EX", 60))
        #expect(!connection.isActive)
        #expect(try await client.connection().configuration.endpoint == .tcp(host: "127.0.0.1", port: newPort))
        await client.close()
    }
}

/// Sentinel over TLS: the sentinel and the master both TLS only; the sentinel names the master by IP, so this is
/// TLS by IP address too (no SNI, the certificate's IP subjectAltName checked).
@Suite(.enabled(if: TestServers.sentinelTLSURL != nil && TestServers.hasTLS, "needs the TLS sentinel"))
struct RedisSentinelTLSTests {
    @Test(arguments: [false, true])
    func discoversAndConnectsOverTLS(clientCertificate: Bool) async throws {
        var url = try #require(TestServers.sentinelTLSURL)
        let dir = try #require(TestServers.tlsDirectory)
        if clientCertificate {
            url += "&ssl_certfile=\(dir)/client.pem&ssl_keyfile=\(dir)/client.key"
        }
        let configuration = try RedisConfiguration(url: url)
        #expect(configuration.tls != nil)
        let connection = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
        #expect(try await connection.send(RESPCommand("PING")).string == "PONG")
        #expect(connection.configuration.endpoint == .tcp(host: "127.0.0.1", port: try #require(TestServers.tlsPort)))
        await connection.close()
    }

    @Test func untrustedCertificateIsRefused() async throws {
        var configuration = try RedisConfiguration(url: try #require(TestServers.sentinelTLSURL))
        configuration.tls?.caFile = try #require(TestServers.tlsDirectory) + "/other-ca.pem"
        do {
            _ = try await RedisConnection.connect(configuration: configuration, logger: TestServers.logger)
            Issue.record("a sentinel with a certificate from an unknown CA was accepted")
        } catch {
            #expect(error.code == .tlsFailure)
        }
    }
}

/// The two frames that decide a failover, parsed without a server.
@Suite struct RedisSentinelFrameTests {
    static func token(_ text: String) throws -> RESPToken {
        try RESPToken(parsing: Array(text.utf8))
    }

    static func bulk(_ text: String) -> String { "$\(text.utf8.count)\r\n\(text)\r\n" }

    @Test(arguments: [">", "*"])
    func switchMasterNamesTheNewMaster(kind: String) throws {
        let payload = "mymaster 127.0.0.1 6380 ::1 6381"
        let frame = try Self.token(
            kind + "3\r\n" + Self.bulk("message") + Self.bulk("+switch-master") + Self.bulk(payload)
        )
        let push = RedisPush(token: frame)
        #expect(RedisSentinelWatch.switchedMaster(push, masterName: "mymaster") == .init(host: "::1", port: 6381))
        #expect(RedisSentinelWatch.switchedMaster(push, masterName: "other") == nil)
        let confirmation = try Self.token(
            kind + "3\r\n" + Self.bulk("subscribe") + Self.bulk("+switch-master") + ":1\r\n"
        )
        #expect(RedisSentinelWatch.switchedMaster(RedisPush(token: confirmation), masterName: "mymaster") == nil)
    }

    @Test(arguments: [
        ("-READONLY You can't write against a read only replica.\r\n", true),
        (
            "-ERR Error running script (call to f_0123): @user_script:1: @user_script: 1: -READONLY You can't write against a read only replica.\r\n",
            true
        ),
        ("-ERR unknown command 'READONLY'\r\n", false),
        ("+READONLY\r\n", false),
        ("-NOSCRIPT No matching script\r\n", false),
    ])
    func readOnlyErrors(_ frame: String, _ expected: Bool) throws {
        #expect(RedisChannelHandler.isReadOnlyError(try Self.token(frame)) == expected)
    }
}
