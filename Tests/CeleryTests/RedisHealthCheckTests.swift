import Celery
import CeleryClient
import JSON
import NIOCore
import RESP
import Redis
import TestSupport
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// `swift-celery ping`'s check against the real servers of scripts/test-redis.sh and fake ones.
@Suite(.enabled(if: TestServers.hasPlain, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct RedisHealthCheckTests {
    private func check(_ url: String, password: String? = nil, count: Int = 5) throws -> RedisHealthCheck {
        RedisHealthCheck(
            configuration: try RedisConfiguration(url: url).withDefaultPassword(password),
            pingCount: count
        )
    }

    private func failure(of check: RedisHealthCheck) async -> RedisError? {
        do {
            _ = try await check.run(logger: TestServers.logger)
            Issue.record("expected the check to fail")
            return nil
        } catch {
            return error
        }
    }

    @Test func plainServerReportsEveryField() async throws {
        let report = try await check(TestServers.plainURL!, count: 7).run(logger: TestServers.logger)
        #expect(report.redactedURL == TestServers.plainURL!)
        #expect(report.serverVersion.split(separator: ".").count == 3)
        #expect(report.protocolVersion == 3)
        #expect(report.latencies.count == 7)
        #expect(report.minimumLatencyMilliseconds > 0)
        #expect(report.minimumLatencyMilliseconds <= report.medianLatencyMilliseconds)
        #expect(report.medianLatencyMilliseconds <= report.maximumLatencyMilliseconds)
        // scripts/test-redis.sh runs the servers with --appendonly no.
        #expect(report.aofEnabled == false)
        #expect(report.lastSave != nil)
        #expect(report.lastSaveISO8601?.hasSuffix("Z") == true)
        #expect(report.aofLastWriteStatus == "ok")
        #expect(report.rdbLastBackgroundSaveStatus == "ok")
        #expect(report.persistenceHealthy)
        #expect(report.roundTripKey.hasPrefix(RedisHealthCheck.keyPrefix))

        let lines = report.lines
        #expect(lines.count == 4)
        #expect(lines[0] == "ok: \(TestServers.plainURL!) (Redis \(report.serverVersion), RESP3)")
        #expect(lines[1].hasPrefix("latency: min ") && lines[1].hasSuffix(" over 7 pings"))
        #expect(lines[2].hasPrefix("persistence: AOF off, last save ") && lines[2].hasSuffix(" (ok)"))
        #expect(lines[3] == "json round trip: ok (\(report.roundTripKey))")

        let json = try JSONValue(parsing: report.json.serializedString())
        #expect(json["ok"] == true)
        #expect(json["redis_version"]?.stringValue == report.serverVersion)
        #expect(json["latency_us"]?["count"]?.intValue == 7)
        #expect(json["persistence"]?["aof_enabled"] == false)
        #expect(json["json_round_trip"]?["key"]?.stringValue == report.roundTripKey)
    }

    @Test func theTemporaryKeyIsDeleted() async throws {
        let report = try await check(TestServers.plainURL!, count: 1).run(logger: TestServers.logger)
        let connection = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: TestServers.plainURL!),
            logger: TestServers.logger
        )
        #expect(try await connection.send(RESPCommand("EXISTS", report.roundTripKey)).int == 0)
        await connection.close()
    }

    @Test(.enabled(if: TestServers.hasAuth)) func passwordFromTheURLOrREDIS_PASSWORD() async throws {
        let port = TestServers.authPort!
        let password = TestServers.authPassword!
        let inURL = try await check("redis://:\(password)@127.0.0.1:\(port)/0").run(logger: TestServers.logger)
        #expect(inURL.redactedURL == "redis://:***@127.0.0.1:\(port)/0")
        #expect(!inURL.json.serializedString().contains(password))
        #expect(!inURL.lines.joined().contains(password))
        let applied = try await check("redis://127.0.0.1:\(port)/0", password: password).run(logger: TestServers.logger)
        #expect(applied.protocolVersion == 3)
    }

    @Test(.enabled(if: TestServers.hasAuth)) func missingPasswordIsNamed() async throws {
        let error = try #require(await failure(of: check("redis://127.0.0.1:\(TestServers.authPort!)/0")))
        #expect(error.code == .authenticationFailed)
        #expect(RedisHealthCheck.failureLine(error).hasPrefix("error: password required: "))
    }

    @Test(.enabled(if: TestServers.hasAuth)) func wrongPasswordIsNamedAndNotPrinted() async throws {
        let url = "redis://:not-the-password-42@127.0.0.1:\(TestServers.authPort!)/0"
        let error = try #require(await failure(of: check(url)))
        #expect(error.code == .authenticationFailed)
        let line = RedisHealthCheck.failureLine(error)
        #expect(line.hasPrefix("error: wrong password: "))
        #expect(!line.contains("not-the-password-42"))
        #expect(!RedisHealthReport.failureJSON(url: nil, error: error).description.contains("not-the-password-42"))
    }

    @Test(.enabled(if: TestServers.hasTLS)) func tlsServer() async throws {
        let report = try await check(TestServers.tlsURL!).run(logger: TestServers.logger)
        #expect(report.redactedURL.hasPrefix("rediss://localhost:"))
        #expect(report.roundTripKey.hasPrefix(RedisHealthCheck.keyPrefix))
    }

    @Test(.enabled(if: TestServers.hasTLS)) func untrustedCertificateIsATLSFailure() async throws {
        var check = try check(TestServers.tlsURL!)
        check.configuration.tls?.caFile = TestServers.tlsDirectory! + "/other-ca.pem"
        let error = try #require(await failure(of: check))
        #expect(error.code == .tlsFailure)
        #expect(RedisHealthCheck.failureLine(error).hasPrefix("error: TLS failure: "))
    }

    @Test func refusedPortIsNamed() async throws {
        let port = try await TestServers.refusedPort()
        let error = try #require(await failure(of: check("redis://127.0.0.1:\(port)/0")))
        #expect(error.code == .connectionRefused)
        #expect(
            RedisHealthCheck.failureLine(error)
                == "error: connection refused by redis://127.0.0.1:\(port)/0: is redis-server running?"
        )
    }

    @Test func aServerThatIsNotRedisIsNamed() async throws {
        let server = try await FakeServer.start { _ in ByteBuffer(string: "HTTP/1.1 400 Bad Request\r\n\r\n") }
        let error = try #require(await failure(of: check("redis://127.0.0.1:\(server.port)/0")))
        #expect(error.code == .notARedisServer)
        #expect(RedisHealthCheck.failureLine(error).hasPrefix("error: not a Redis server: "))
        try await server.close()
    }

    @Test(.enabled(if: TestServers.hasTLS)) func plainTextAtATLSPortIsNamed() async throws {
        var check = try check(TestServers.tlsURL!)
        check.configuration.tls = nil
        check.configuration.connectTimeout = .seconds(2)
        let error = try #require(await failure(of: check))
        let line = RedisHealthCheck.failureLine(error)
        #expect(!line.contains("\n"))
        #expect(line.hasPrefix("error: "))
    }

    @Test func aSilentServerTimesOut() async throws {
        let server = try await FakeServer.start { _ in nil }
        var check = try check("redis://127.0.0.1:\(server.port)/0")
        check.configuration.connectTimeout = .milliseconds(300)
        let error = try #require(await failure(of: check))
        #expect(error.code == .connectTimeout)
        #expect(RedisHealthCheck.failureLine(error).hasPrefix("error: timeout: "))
        try await server.close()
    }

    @Test func failureLinesAreOneLine() {
        let error = RedisError(.unexpectedReply, "JSON round trip mismatch: k read back as\n{}")
        #expect(RedisHealthCheck.failureLine(error) == "error: JSON round trip mismatch: k read back as {}")
    }
}

@Suite struct RedisHealthReportTests {
    private func report(latencies: [Int], aofStatus: String? = "ok") -> RedisHealthReport {
        RedisHealthReport(
            redactedURL: "redis://127.0.0.1:6379/0",
            serverVersion: "7.0.15",
            protocolVersion: 3,
            latencies: latencies.map { .microseconds($0) },
            aofEnabled: true,
            lastSave: CeleryTimestamp(secondsSince1970: 1_795_318_800.4),
            aofLastWriteStatus: aofStatus,
            rdbLastBackgroundSaveStatus: "ok",
            roundTripKey: "swift-celery:ping:1a2b3c"
        )
    }

    @Test func linesMatchTheDocumentedFormat() {
        #expect(
            report(latencies: [210, 80, 100, 95, 120]).lines == [
                "ok: redis://127.0.0.1:6379/0 (Redis 7.0.15, RESP3)",
                "latency: min 0.08 ms, median 0.10 ms, max 0.21 ms over 5 pings",
                "persistence: AOF on, last save 2026-11-22T03:40:00Z (ok)",
                "json round trip: ok (swift-celery:ping:1a2b3c)",
            ]
        )
    }

    @Test(arguments: [
        ([100], 0.1), ([300, 100], 0.2), ([300, 100, 200], 0.2), ([400, 100, 300, 200], 0.25),
    ])
    func median(latencies: [Int], expected: Double) {
        #expect(abs(report(latencies: latencies).medianLatencyMilliseconds - expected) < 1e-9)
    }

    @Test func failedAOFWriteIsShown() {
        let report = report(latencies: [100], aofStatus: "err")
        #expect(!report.persistenceHealthy)
        #expect(report.lines[2].contains("aof_last_write_status err"))
        #expect(report.json["persistence"]?["ok"] == false)
    }

    @Test func infoFields() {
        let fields = RedisHealthCheck.infoFields(
            "# Server\r\nredis_version:7.0.15\r\nos:Linux 6.1\r\n\r\n# X\r\na:b:c\r\n"
        )
        #expect(fields == ["redis_version": "7.0.15", "os": "Linux 6.1", "a": "b:c"])
    }
}
