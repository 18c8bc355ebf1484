import Foundation
import Logging
import NIOCore
import NIOPosix
import RESP
import TestSupport
import Testing

@testable import Redis

/// Against the real redis-server instances that scripts/test-redis.sh starts.
@Suite(.enabled(if: TestServers.hasPlain, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct RedisClientIntegrationTests {
    @Test func tenThousandPipelinedCommands() async throws {
        let client = try TestServers.plainClient()
        let key = TestServers.uniquePrefix() + "list"
        var commands: [RESPCommand] = []
        for i in 0..<10_000 { commands.append(RESPCommand("RPUSH", key, "v\(i)")) }
        let replies = try await client.pipeline(commands)
        #expect(replies.count == 10_000)
        #expect(try replies.last!.get().int == 10_000)
        #expect(try replies.map { try $0.get().int! } == Array(1...10_000))
        let pops = try await client.pipeline((0..<10_000).map { _ in RESPCommand("LPOP", key) })
        #expect(try pops.map { try $0.get().string! } == (0..<10_000).map { "v\($0)" })
        await client.close()
    }

    @Test func concurrentCallersShareOneConnection() async throws {
        let client = try TestServers.plainClient()
        let key = TestServers.uniquePrefix() + "counter"
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    for _ in 0..<20 { try await client.send(RESPCommand("INCR", key)) }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await client.send(RESPCommand("GET", key)).int == 1000)
        await client.close()
    }

    @Test func theSharedConnectionIsReusedUntilItDropsOrTheClientCloses() async throws {
        let client = try TestServers.plainClient()
        let first = try await client.connection()
        let id = try #require(try await client.send(RESPCommand("CLIENT", "ID")).int)
        #expect(try await client.connection() === first)
        #expect(try await client.send(RESPCommand("CLIENT", "ID")).int == id)

        // Killed by the server: the next caller gets a new connection, not the dead one.
        let admin = try TestServers.plainClient()
        #expect(try await admin.send(RESPCommand("CLIENT", "KILL", "ID", String(id))).int == 1)
        await admin.close()
        for _ in 0..<200 where first.isActive { try await Task.sleep(for: .milliseconds(5)) }
        #expect(!first.isActive)
        let second = try await client.connection()
        #expect(second !== first)
        #expect(second.isActive)
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        #expect(await client.reconnectCount == 1)

        // close() drops the shared connection; the next command connects again.
        await client.close()
        #expect(!second.isActive)
        let third = try await client.connection()
        #expect(third !== second)
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        await client.close()
    }

    @Test func serverErrorsFailOneCommandOnly() async throws {
        let client = try TestServers.plainClient()
        let key = TestServers.uniquePrefix() + "s"
        let replies = try await client.pipeline([
            RESPCommand("SET", key, "text"), RESPCommand("INCR", key), RESPCommand("GET", key),
        ])
        #expect(throws: RedisError.self) { try replies[1].get() }
        #expect(try replies[2].get().string == "text")
        await #expect(throws: RedisError.self) { try await client.send(RESPCommand("NOSUCHCOMMAND")) }
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        await client.close()
    }

    @Test func pubSubDeliveryAndUnsubscribe() async throws {
        let client = try TestServers.plainClient()
        let prefix = TestServers.uniquePrefix()
        let (a, b, p) = (prefix + "a", prefix + "b", prefix + "pat.*")
        try await client.withSubscription(channels: [a, b], patterns: [p]) { subscription in
            var iterator = subscription.messages.makeAsyncIterator()
            #expect(try await client.send(RESPCommand("PUBLISH", a, "one")).int == 1)
            let first = try #require(try await iterator.next())
            #expect(first.channel == a && String(buffer: first.payload) == "one" && first.pattern == nil)

            #expect(try await client.send(RESPCommand("PUBLISH", prefix + "pat.x", "two")).int == 1)
            let second = try #require(try await iterator.next())
            #expect(second.channel == prefix + "pat.x" && second.pattern == p)

            try await subscription.unsubscribe(channels: [a])
            #expect(try await client.send(RESPCommand("PUBLISH", a, "lost")).int == 0)
            #expect(try await client.send(RESPCommand("PUBLISH", b, "three")).int == 1)
            let third = try #require(try await iterator.next())
            #expect(third.channel == b && String(buffer: third.payload) == "three")
        }
        await client.close()
    }

    @Test func brpopTimesOutThenWakesUp() async throws {
        let client = try TestServers.plainClient()
        let key = TestServers.uniquePrefix() + "q"
        try await client.withDedicatedConnection { connection in
            let empty = try await connection.sendBlocking(
                RESPCommand("BRPOP", key, "0.2"),
                blockingTimeout: .milliseconds(200)
            )
            #expect(empty.isNull)
            async let popped = connection.sendBlocking(RESPCommand("BRPOP", key, 5), blockingTimeout: .seconds(5))
            try await Task.sleep(for: .milliseconds(100))
            try await client.send(RESPCommand("LPUSH", key, "hello"))
            let reply = try await popped
            #expect(reply.array?.map { $0.string } == [key, "hello"])
        }
        await client.close()
    }

    @Test func cancellingABlockingPopClosesItsConnection() async throws {
        let client = try TestServers.plainClient()
        let key = TestServers.uniquePrefix() + "q"
        let connection = try await client.makeConnection()
        let task = Task {
            try await connection.sendBlocking(RESPCommand("BRPOP", key, 30), blockingTimeout: .seconds(30))
        }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        await #expect(throws: RedisError.self) { try await task.value }
        try await connection.closeFuture.get()
        #expect(!connection.isActive)
        await client.close()
    }

    @Test func evalshaSurvivesScriptFlush() async throws {
        let client = try TestServers.plainClient()
        let key = TestServers.uniquePrefix() + "k"
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        #expect(try await client.evaluate(script, keys: [key], arguments: ["5"]).int == 5)
        try await client.send(RESPCommand("SCRIPT", "FLUSH"))
        #expect(try await client.evaluate(script, keys: [key], arguments: ["2"]).int == 7)
        await client.close()
    }

    @Test func startEvaluateWritesAtOnceAndReadsTheReplyLater() async throws {
        let client = try TestServers.plainClient()
        let key = TestServers.uniquePrefix() + "s"
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        // First use: SCRIPT LOAD, then the EVALSHA.
        #expect(try await client.startEvaluate(script, keys: [key], arguments: ["5"]).reply().int == 5)
        // Each call is written when it is started: the second reply read first already counts the first call.
        // Other tests flush the server's scripts at any moment, and a call that meets NOSCRIPT is sent again as EVAL
        // when its reply is read, which reverses the order: a few attempts, one of which must show it.
        var writtenAtStart = false
        for _ in 0..<5 where !writtenAtStart {
            let base = try await client.send(RESPCommand("GET", key)).int ?? 0
            let first = try await client.startEvaluate(script, keys: [key], arguments: ["1"])
            let second = try await client.startEvaluate(script, keys: [key], arguments: ["10"])
            let secondValue = try await second.reply().int
            let firstValue = try await first.reply().int
            writtenAtStart = secondValue == base + 11 && firstValue == base + 1
        }
        #expect(writtenAtStart)
        // The server forgot the script: the same call as EVAL.
        try await client.send(RESPCommand("SCRIPT", "FLUSH"))
        let before = try await client.send(RESPCommand("GET", key)).int ?? 0
        #expect(try await client.startEvaluate(script, keys: [key], arguments: ["2"]).reply().int == before + 2)
        // An error reply throws when the reply is read.
        let failing = RedisScript("return redis.error_reply('ERR refused by the test')")
        await #expect(throws: RedisError.self) { try await client.evaluate(failing) }
        let pending = try await client.startEvaluate(failing)
        await #expect(throws: RedisError.self) { try await pending.reply() }
        await client.close()
    }

    @Test func multiExec() async throws {
        let client = try TestServers.plainClient()
        let key = TestServers.uniquePrefix()
        let results = try await client.transaction([
            RESPCommand("SET", key + "a", "1"),
            RESPCommand("INCR", key + "a"),
            RESPCommand("LPUSH", key + "a", "x"),  // WRONGTYPE at EXEC time: only this one fails
            RESPCommand("GET", key + "a"),
        ])
        #expect(try results[1].get().int == 2)
        #expect(throws: RedisError.self) { try results[2].get() }
        #expect(try results[3].get().string == "2")
        // A syntax error while queueing aborts the whole transaction.
        await #expect(throws: RedisError.self) {
            try await client.transaction([RESPCommand("SET", key + "b")])
        }
        #expect(try await client.send(RESPCommand("EXISTS", key + "b")).int == 0)
        await client.close()
    }

    @Test func unixSocketAndDatabaseSelection() async throws {
        let key = TestServers.uniquePrefix() + "db"
        let unixURL = try #require(TestServers.env["SWIFT_CELERY_TEST_REDIS_UNIX_URL"])
        var configuration = try RedisConfiguration(url: unixURL)
        configuration.database = 3
        configuration.clientName = "swift-celery-test"
        let db3 = RedisClient(configuration: configuration, logger: TestServers.logger)
        try await db3.send(RESPCommand("SET", key, "in-db-3"))
        #expect(try await db3.send(RESPCommand("CLIENT", "GETNAME")).string == "swift-celery-test")
        let db0 = try TestServers.plainClient()
        #expect(try await db0.send(RESPCommand("EXISTS", key)).int == 0)
        #expect(try await db3.send(RESPCommand("GET", key)).string == "in-db-3")
        try await db3.send(RESPCommand("DEL", key))
        await db3.close()
        await db0.close()
    }

    @Test func connectionRefusedIsClear() async throws {
        let port = TestServers.freePort()
        var configuration = try RedisConfiguration(url: "redis://:secret-pw@127.0.0.1:\(port)/0")
        configuration.connectTimeout = .seconds(2)
        let client = RedisClient(configuration: configuration, logger: TestServers.logger)
        do {
            try await client.send(RESPCommand("PING"))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .connectionRefused)
            #expect(error.description.contains("127.0.0.1:\(port)"))
            #expect(!error.description.contains("secret-pw"))
        }
    }

    @Test func reconnectsAfterTheServerIsKilledAndRestarted() async throws {
        let server = try OwnRedisServer()
        try await server.start()
        let client = RedisClient(
            configuration: try RedisConfiguration(url: server.url),
            backoff: RedisBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)),
            logger: TestServers.logger
        )
        try await client.send(RESPCommand("SET", "k", "before"))
        server.kill()
        await #expect(throws: RedisError.self) { try await client.send(RESPCommand("GET", "k")) }
        // While the server is down every call fails fast with a clear error...
        do {
            try await client.send(RESPCommand("PING"))
            Issue.record("expected an error while the server is down")
        } catch {
            #expect(error.code == .connectionRefused || error.code == .connectionClosed)
        }
        // ...and once it is back, the client reconnects by itself.
        try await server.start()
        var reply: RESPToken?
        for _ in 0..<50 {
            reply = try? await client.send(RESPCommand("PING"))
            if reply != nil { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(reply?.string == "PONG")
        await client.close()
    }

    @Test func serverClosingMidReplyFailsTheCommand() async throws {
        let server = try await FakeServer.start { _ in ByteBuffer(string: "$10\r\nhel") }
        let client = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)"),
            logger: TestServers.logger
        )
        do {
            try await client.send(RESPCommand("GET", "k"))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .connectionClosed)
        }
        try await server.close()
    }

    @Test func aServerThatIsNotRedisIsNamed() async throws {
        let server = try await FakeServer.start { _ in ByteBuffer(string: "HTTP/1.1 400 Bad Request\r\n\r\n") }
        let client = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)"),
            logger: TestServers.logger
        )
        do {
            try await client.send(RESPCommand("PING"))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .notARedisServer)
        }
        try await server.close()
    }
}

@Suite(.enabled(if: TestServers.hasAuth, "needs the password-protected test server"))
struct RedisAuthenticationTests {
    @Test func correctPasswordConnects() async throws {
        let client = RedisClient(
            configuration: try RedisConfiguration(url: TestServers.authURL!),
            logger: TestServers.logger
        )
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        await client.close()
    }

    @Test func defaultPasswordIsAppliedWhenTheURLHasNone() async throws {
        let url = "redis://127.0.0.1:\(TestServers.authPort!)/0"
        let configuration = try RedisConfiguration(url: url).withDefaultPassword(TestServers.authPassword)
        let client = RedisClient(configuration: configuration, logger: TestServers.logger)
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        await client.close()
    }

    @Test func wrongPasswordIsClearAndNeverPrinted() async throws {
        let url = "redis://:not-the-password-42@127.0.0.1:\(TestServers.authPort!)/0"
        let client = RedisClient(configuration: try RedisConfiguration(url: url), logger: TestServers.logger)
        do {
            try await client.send(RESPCommand("PING"))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .authenticationFailed)
            #expect(!error.description.contains("not-the-password-42"))
        }
    }

    @Test func missingPasswordIsClear() async throws {
        let client = RedisClient(
            configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(TestServers.authPort!)/0"),
            logger: TestServers.logger
        )
        do {
            try await client.send(RESPCommand("PING"))
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .authenticationFailed)
            #expect(error.message.contains("requires a password"))
        }
    }
}

@Suite(.enabled(if: TestServers.hasTLS, "needs the TLS test server"))
struct RedisTLSTests {
    @Test func verifiedTLSConnects() async throws {
        let client = RedisClient(
            configuration: try RedisConfiguration(url: TestServers.tlsURL!),
            logger: TestServers.logger
        )
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        await client.close()
    }

    @Test func clientCertificateIsPresented() async throws {
        let dir = TestServers.tlsDirectory!
        let url = TestServers.tlsURL! + "&ssl_certfile=\(dir)/client.pem&ssl_keyfile=\(dir)/client.key"
        let client = RedisClient(configuration: try RedisConfiguration(url: url), logger: TestServers.logger)
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        await client.close()
    }

    @Test func untrustedCertificateIsRefused() async throws {
        var configuration = try RedisConfiguration(url: TestServers.tlsURL!)
        configuration.tls?.caFile = TestServers.tlsDirectory! + "/other-ca.pem"
        let client = RedisClient(configuration: configuration, logger: TestServers.logger)
        do {
            try await client.send(RESPCommand("PING"))
            Issue.record("a certificate from an unknown CA was accepted")
        } catch {
            #expect(error.code == .tlsFailure)
        }
    }

    @Test func verificationCanBeTurnedOffExplicitly() async throws {
        var configuration = try RedisConfiguration(url: TestServers.tlsURL!)
        configuration.tls?.caFile = TestServers.tlsDirectory! + "/other-ca.pem"
        configuration.tls?.verification = .none
        let client = RedisClient(configuration: configuration, logger: TestServers.logger)
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        await client.close()
    }

    /// The hosts this machine's TLS test server answers on, as written in a URL.
    static let hosts = ["localhost", "127.0.0.1"] + (TestServers.tlsIPv6 ? ["[::1]"] : [])

    /// By name and by IP (no SNI for an IP, its IP subjectAltName checked), with and without a client certificate.
    @Test(arguments: hosts, [false, true])
    func connectsByNameAndByIP(host: String, clientCertificate: Bool) async throws {
        let dir = try #require(TestServers.tlsDirectory)
        let port = try #require(TestServers.tlsPort)
        var url = "rediss://\(host):\(port)/0?ssl_ca_certs=\(dir)/ca.pem"
        if clientCertificate {
            url += "&ssl_certfile=\(dir)/client.pem&ssl_keyfile=\(dir)/client.key"
        }
        let client = RedisClient(configuration: try RedisConfiguration(url: url), logger: TestServers.logger)
        #expect(try await client.send(RESPCommand("PING")).string == "PONG")
        await client.close()
    }

    /// A certificate from the right CA that names neither the host nor the address is refused, by name and by IP.
    @Test(arguments: hosts, [false, true])
    func certificateForAnotherNameIsRefused(host: String, clientCertificate: Bool) async throws {
        let dir = try #require(TestServers.tlsDirectory)
        let port = try #require(TestServers.tlsWrongNamePort)
        guard host != "[::1]" else { return }  // the wrong-name server listens on IPv4 loopback only
        var url = "rediss://\(host):\(port)/0?ssl_ca_certs=\(dir)/ca.pem&socket_connect_timeout=10"
        if clientCertificate {
            url += "&ssl_certfile=\(dir)/client.pem&ssl_keyfile=\(dir)/client.key"
        }
        let client = RedisClient(configuration: try RedisConfiguration(url: url), logger: TestServers.logger)
        do {
            try await client.send(RESPCommand("PING"))
            Issue.record("a certificate for redis.invalid and 192.0.2.1 was accepted for \(host)")
        } catch {
            #expect(error.code == .tlsFailure)
        }
        // The same server with the name check off connects: the refusal above was the name, not the chain.
        let unchecked = RedisClient(
            configuration: try RedisConfiguration(url: url + "&ssl_check_hostname=false"),
            logger: TestServers.logger
        )
        #expect(try await unchecked.send(RESPCommand("PING")).string == "PONG")
        await unchecked.close()
    }

    @Test func plainClientAgainstTLSPortFails() async throws {
        var configuration = try RedisConfiguration(url: TestServers.tlsURL!)
        configuration.tls = nil
        configuration.connectTimeout = .seconds(2)
        let client = RedisClient(configuration: configuration, logger: TestServers.logger)
        await #expect(throws: RedisError.self) { try await client.send(RESPCommand("PING")) }
    }
}

@Suite struct RedisTLSServerNameTests {
    @Test func ipLiteralsGoWithoutSNI() {
        let tls = RedisConfiguration.TLS()
        #expect(
            RedisConnection.sniHostname(tls, endpoint: .tcp(host: "cache.example.com", port: 6380))
                == "cache.example.com"
        )
        #expect(RedisConnection.sniHostname(tls, endpoint: .tcp(host: "127.0.0.1", port: 6380)) == nil)
        #expect(RedisConnection.sniHostname(tls, endpoint: .tcp(host: "::1", port: 6380)) == nil)
        #expect(RedisConnection.sniHostname(tls, endpoint: .tcp(host: "fd00::2", port: 6380)) == nil)
        let named = RedisConfiguration.TLS(serverName: "redis.internal")
        #expect(RedisConnection.sniHostname(named, endpoint: .tcp(host: "192.0.2.7", port: 6380)) == "redis.internal")
        let ip = RedisConfiguration.TLS(serverName: "192.0.2.7")
        #expect(RedisConnection.sniHostname(ip, endpoint: .tcp(host: "redis.internal", port: 6380)) == nil)
    }
}
