import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import Redis

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `swift-celery ping`: checks that Redis is reachable, authenticated, answering and storing JSON intact.
///
/// Exit status 0 when healthy; 1 with one `error: …` line on standard error otherwise; 2 for a malformed URL.
struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping",
        abstract: "Check the connection to Redis.",
        discussion: """
            The URL is --broker, else REDIS_URL, else CELERY_BROKER_URL, else redis://127.0.0.1:6379/0; \
            REDIS_PASSWORD is used when the URL carries no password. Exits 0 when Redis is healthy, 1 when it \
            is not (one line on standard error names the cause), 2 when the URL is malformed.
            """
    )

    @Option(help: "The Redis URL to check (redis://, rediss:// or unix://).")
    var broker: String?

    @Option(help: "How many PINGs to time.")
    var count: Int = 5

    @Option(help: "Seconds allowed to connect, TLS and authentication included (socket_timeout bounds commands).")
    var timeout: Double = 5

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard timeout.isFinite, timeout > 0, timeout < 1e6 else {
            throw ValidationError("--timeout must be a positive number of seconds")
        }
    }

    func run() async throws {
        ProcessArguments.maskPasswords()
        let environment = CeleryEnvironment(broker: broker, environment: Self.processEnvironment())
        var configuration: RedisConfiguration
        do {
            configuration = try environment.redisConfiguration()
        } catch {
            // The message names what is wrong without repeating the URL, which may hold a password.
            Self.writeStandardError("error: \(error.message)\n")
            throw ExitCode(2)
        }
        configuration.connectTimeout = .milliseconds((timeout * 1000).rounded(.up))

        var logger = Logger(label: "swift-celery.ping")
        logger.logLevel = .critical
        let check = RedisHealthCheck(configuration: configuration, pingCount: count)
        do {
            let report = try await check.run(logger: logger)
            print(json ? report.json.serializedString() : report.lines.joined(separator: "\n"))
        } catch {
            if json {
                print(RedisHealthReport.failureJSON(url: configuration.redactedURL, error: error).serializedString())
            }
            Self.writeStandardError(RedisHealthCheck.failureLine(error) + "\n")
            throw ExitCode.failure
        }
    }

    private static func writeStandardError(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            _ = write(2, bytes.baseAddress, bytes.count)
        }
    }

    /// The variables `CeleryEnvironment` reads, from the process environment.
    private static func processEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        for key in [
            "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL", "REDIS_PASSWORD", "CELERY_BROKER_MASTER_NAME",
            "CELERY_RESULT_BACKEND_MASTER_NAME", "REDIS_SENTINEL_PASSWORD",
        ] {
            if let value = getenv(key) {
                result[key] = String(cString: value)
            }
        }
        return result
    }
}
