import CeleryProtocol
import JSON
import Logging
import RESP
import Redis

/// The connectivity check behind `swift-celery ping` and the compose health checks.
///
/// It connects and authenticates, measures PING round trips, reads the server's version and persistence state
/// from `INFO`, and writes a JSON value to a temporary key, reads it back and compares it — the path every task
/// message and result takes.
public struct RedisHealthCheck: Sendable {
    /// The server to check; its connect and command timeouts bound the whole check.
    public var configuration: RedisConfiguration
    /// How many PINGs to time, one at a time; at least 1.
    public var pingCount: Int

    /// Prefix of the temporary key of the JSON round trip; it expires after a minute if the check dies.
    public static let keyPrefix = "swift-celery:ping:"

    /// Creates a check of the server `configuration` names.
    public init(configuration: RedisConfiguration, pingCount: Int = 5) {
        self.configuration = configuration
        self.pingCount = max(1, pingCount)
    }

    /// Runs the check on one new connection, closed before returning.
    ///
    /// - Throws: `RedisError`: the connection's own errors (refused, timeout, authentication, TLS, not Redis),
    ///   or `.unexpectedReply` when INFO is malformed or the JSON read back differs from what was written.
    public func run(logger: Logger) async throws(RedisError) -> RedisHealthReport {
        let connection: RedisConnection
        do {
            connection = try await RedisConnection.connect(configuration: configuration, logger: logger)
        } catch  where error.code == .connectionClosed {
            // Typically a plain client at a TLS port, or a server that hangs up on anything but its own protocol.
            throw RedisError(
                .connectionClosed,
                "\(configuration.redactedURL) closed the connection during the handshake"
                    + " (a TLS port needs rediss://; or it is not a Redis server)",
                underlyingError: error
            )
        }
        do {
            let report = try await check(connection)
            await connection.close()
            return report
        } catch {
            await connection.close()
            throw error
        }
    }

    /// `host:port` of the master a Sentinel configuration led to, else nil.
    private func sentinelMaster(of connection: RedisConnection) -> String? {
        guard configuration.sentinel != nil, case .tcp(let host, let port) = connection.configuration.endpoint else {
            return nil
        }
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    private func check(_ connection: RedisConnection) async throws(RedisError) -> RedisHealthReport {
        let clock = ContinuousClock()
        var latencies: [Duration] = []
        latencies.reserveCapacity(pingCount)
        for _ in 0..<pingCount {
            let start = clock.now
            let reply = try await connection.send(RESPCommand("PING"))
            latencies.append(start.duration(to: clock.now))
            guard reply.string == "PONG" else {
                throw RedisError(
                    .notARedisServer,
                    "the server at \(configuration.redactedURL) answered PING with \(reply)"
                )
            }
        }

        let server = try await info(connection, section: "server")
        let persistence = try await info(connection, section: "persistence")
        guard let version = server["redis_version"] ?? connection.serverVersion else {
            throw RedisError(.notARedisServer, "the server at \(configuration.redactedURL) reports no redis_version")
        }

        let key = try await jsonRoundTrip(connection)

        return RedisHealthReport(
            redactedURL: configuration.redactedURL,
            serverVersion: version,
            protocolVersion: connection.protocolVersion,
            latencies: latencies,
            aofEnabled: persistence["aof_enabled"].map { $0 == "1" },
            lastSave: persistence["rdb_last_save_time"].flatMap { Double($0) }.map {
                CeleryTimestamp(secondsSince1970: $0)
            },
            aofLastWriteStatus: persistence["aof_last_write_status"],
            rdbLastBackgroundSaveStatus: persistence["rdb_last_bgsave_status"],
            roundTripKey: key,
            sentinelMaster: sentinelMaster(of: connection)
        )
    }

    private func info(_ connection: RedisConnection, section: String) async throws(RedisError) -> [String: String] {
        let reply = try await connection.send(RESPCommand("INFO", section))
        guard let text = reply.string else {
            throw RedisError(.unexpectedReply, "INFO \(section) answered \(reply)")
        }
        return Self.infoFields(text)
    }

    /// SET a JSON value with a 60 s expiry, GET it, parse and compare it, DEL it; returns the key used.
    private func jsonRoundTrip(_ connection: RedisConnection) async throws(RedisError) -> String {
        let nonce = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let key = Self.keyPrefix + nonce
        let value: JSONValue = [
            "check": "swift-celery ping",
            "at": .string(CeleryTimestamp.now().iso8601),
            "nonce": .string(nonce),
            "text": "naïve ✓ \"quoted\"\n",
        ]
        _ = try await connection.send(RESPCommand("SET", key, RESPBytes(value.serialized()), "EX", 60))
        let reply: RESPToken
        do {
            reply = try await connection.send(RESPCommand("GET", key))
        } catch {
            _ = try? await connection.send(RESPCommand("DEL", key))
            throw error
        }
        _ = try await connection.send(RESPCommand("DEL", key))
        guard let bytes = reply.bytes else {
            throw RedisError(.unexpectedReply, "JSON round trip mismatch: \(key) read back as \(reply)")
        }
        let readBack: JSONValue
        do {
            readBack = try JSONValue(parsing: bytes.readableBytesView)
        } catch {
            throw RedisError(
                .unexpectedReply,
                "JSON round trip mismatch: \(key) read back as invalid JSON (\(error))",
                underlyingError: error
            )
        }
        guard readBack == value else {
            throw RedisError(.unexpectedReply, "JSON round trip mismatch: \(key) read back as \(readBack)")
        }
        return key
    }

    /// The `field:value` lines of an INFO reply; section headers (`# Server`) and blank lines are skipped.
    package static func infoFields(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in text.split(whereSeparator: { $0 == "\r\n" || $0 == "\n" || $0 == "\r" }) {
            guard !line.hasPrefix("#"), let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = String(line[line.index(after: colon)...])
        }
        return fields
    }

    /// The one line an operator sees when the check fails: `error: <cause>: <details>`, never a password.
    public static func failureLine(_ error: RedisError) -> String {
        let message = error.message.split(whereSeparator: \.isNewline).joined(separator: " ")
        let cause: String?
        switch error.code {
        case .connectionRefused:
            // The message already reads "connection refused by <url>: is redis-server running?".
            cause = message.hasPrefix("connection refused") ? nil : "connection refused"
        case .connectTimeout, .commandTimeout: cause = "timeout"
        case .authenticationFailed:
            if message.contains("requires a password") {
                cause = "password required"
            } else if message.contains("none configured") {
                cause = "password given but none configured"
            } else {
                cause = "wrong password"
            }
        case .tlsFailure: cause = "TLS failure"
        case .connectionClosed: cause = "connection closed"
        case .notARedisServer, .protocolError: cause = "not a Redis server"
        case .unexpectedReply: cause = message.hasPrefix("JSON round trip mismatch") ? nil : "unexpected reply"
        case .invalidURL: cause = nil
        default: cause = "\(error.code)"
        }
        return "error: " + (cause.map { "\($0): " } ?? "") + message
    }
}

/// What ``RedisHealthCheck`` found on a healthy server.
public struct RedisHealthReport: Sendable, Hashable {
    /// The server's URL without its password.
    public var redactedURL: String
    /// `redis_version` from `INFO server`.
    public var serverVersion: String
    /// 3 when the server speaks RESP3 (`HELLO 3`), else 2.
    public var protocolVersion: Int
    /// Each PING's round trip, in order.
    public var latencies: [Duration]
    /// `aof_enabled` from `INFO persistence`.
    public var aofEnabled: Bool?
    /// `rdb_last_save_time`: the last successful RDB save (or the server's start).
    public var lastSave: CeleryTimestamp?
    /// `aof_last_write_status` (`ok` or `err`).
    public var aofLastWriteStatus: String?
    /// `rdb_last_bgsave_status` (`ok` or `err`).
    public var rdbLastBackgroundSaveStatus: String?
    /// The temporary key the JSON round trip used (already deleted).
    public var roundTripKey: String
    /// For a `sentinel://` URL, the master the sentinels named (`host:port`); nil otherwise.
    public var sentinelMaster: String?

    /// Creates a report; normally made by ``RedisHealthCheck/run(logger:)``.
    public init(
        redactedURL: String,
        serverVersion: String,
        protocolVersion: Int,
        latencies: [Duration],
        aofEnabled: Bool?,
        lastSave: CeleryTimestamp?,
        aofLastWriteStatus: String?,
        rdbLastBackgroundSaveStatus: String?,
        roundTripKey: String,
        sentinelMaster: String? = nil
    ) {
        self.redactedURL = redactedURL
        self.serverVersion = serverVersion
        self.protocolVersion = protocolVersion
        self.latencies = latencies
        self.aofEnabled = aofEnabled
        self.lastSave = lastSave
        self.aofLastWriteStatus = aofLastWriteStatus
        self.rdbLastBackgroundSaveStatus = rdbLastBackgroundSaveStatus
        self.roundTripKey = roundTripKey
        self.sentinelMaster = sentinelMaster
    }

    /// The fastest PING, in milliseconds.
    public var minimumLatencyMilliseconds: Double { latencies.map(Self.milliseconds).min() ?? 0 }
    /// The slowest PING, in milliseconds.
    public var maximumLatencyMilliseconds: Double { latencies.map(Self.milliseconds).max() ?? 0 }
    /// The median PING (the mean of the middle two for an even count), in milliseconds.
    public var medianLatencyMilliseconds: Double {
        let sorted = latencies.map(Self.milliseconds).sorted()
        guard !sorted.isEmpty else { return 0 }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// True unless the server reports a failed AOF write or background save.
    public var persistenceHealthy: Bool {
        (aofLastWriteStatus ?? "ok") == "ok" && (rdbLastBackgroundSaveStatus ?? "ok") == "ok"
    }

    /// `2026-11-22T03:40:00Z`: whole seconds, as Redis records them.
    public var lastSaveISO8601: String? {
        guard let lastSave else { return nil }
        let text = CeleryTimestamp(secondsSince1970: lastSave.secondsSince1970.rounded(.down)).iso8601
        return text.hasSuffix("+00:00") ? String(text.dropLast(6)) + "Z" : text
    }

    /// The report for people: four lines, no password.
    public var lines: [String] {
        var persistence = "persistence: AOF \(aofEnabled == true ? "on" : "off")"
        if let lastSave = lastSaveISO8601 {
            persistence += ", last save \(lastSave)"
        }
        if persistenceHealthy {
            persistence += " (ok)"
        } else {
            persistence +=
                " (aof_last_write_status \(aofLastWriteStatus ?? "?"),"
                + " rdb_last_bgsave_status \(rdbLastBackgroundSaveStatus ?? "?"))"
        }
        return [
            "ok: \(redactedURL) (Redis \(serverVersion), RESP\(protocolVersion)"
                + (sentinelMaster.map { ", master \($0) named by Sentinel" } ?? "") + ")",
            "latency: min \(Self.format(minimumLatencyMilliseconds)) ms, median \(Self.format(medianLatencyMilliseconds)) ms,"
                + " max \(Self.format(maximumLatencyMilliseconds)) ms over \(latencies.count) ping\(latencies.count == 1 ? "" : "s")",
            persistence,
            "json round trip: ok (\(roundTripKey))",
        ]
    }

    /// The report for machines: one JSON object.
    public var json: JSONValue {
        var persistence: JSONObject = [:]
        persistence["aof_enabled"] = aofEnabled.map { .bool($0) } ?? .null
        persistence["rdb_last_save_time"] = lastSaveISO8601.map { .string($0) } ?? .null
        persistence["aof_last_write_status"] = aofLastWriteStatus.map { .string($0) } ?? .null
        persistence["rdb_last_bgsave_status"] = rdbLastBackgroundSaveStatus.map { .string($0) } ?? .null
        persistence["ok"] = .bool(persistenceHealthy)
        return [
            "ok": true,
            "url": .string(redactedURL),
            "redis_version": .string(serverVersion),
            "protocol": .int(protocolVersion),
            "latency_us": [
                "min": .int(Self.microseconds(minimumLatencyMilliseconds)),
                "median": .int(Self.microseconds(medianLatencyMilliseconds)),
                "max": .int(Self.microseconds(maximumLatencyMilliseconds)),
                "count": .int(latencies.count),
            ],
            "persistence": .object(persistence),
            "json_round_trip": ["ok": true, "key": .string(roundTripKey)],
            "sentinel_master": sentinelMaster.map { .string($0) } ?? .null,
        ]
    }

    /// The JSON object `--json` prints when the check fails.
    public static func failureJSON(url: String?, error: RedisError) -> JSONValue {
        [
            "ok": false,
            "url": url.map { .string($0) } ?? .null,
            "error": ["code": .string("\(error.code)"), "message": .string(error.message)],
        ]
    }

    private static func milliseconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }

    /// Whole microseconds: all a loopback PING can show, and exact in JSON.
    private static func microseconds(_ milliseconds: Double) -> Int { Int((milliseconds * 1000).rounded()) }

    private static func format(_ milliseconds: Double) -> String {
        let hundredths = Int((milliseconds * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}
