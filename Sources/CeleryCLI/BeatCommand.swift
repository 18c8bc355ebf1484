import ArgumentParser
import Beat
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Foundation
import JSON
import Logging
import Redis
import ServiceLifecycle
import UnixSignals

struct BeatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beat",
        abstract: "Push periodic tasks onto Celery queues; any number of beat processes may run, one leads.",
        discussion: """
            The broker is --broker, else CELERY_BROKER_URL, else REDIS_URL, else redis://127.0.0.1:6379/0; \
            REDIS_PASSWORD is used when the URL has none. SIGHUP reloads the schedule file; SIGTERM or SIGINT \
            stops beat and releases the leader lock.
            """
    )

    @Option(name: [.short, .long], help: "The schedule file (YAML or JSON).")
    var schedule: String

    @Option(name: [.short, .long], help: "Broker URL (redis://, rediss://, unix://).")
    var broker: String?

    @Flag(name: .long, help: "Print each entry's next fire times and exit; Redis is not used.")
    var dryRun = false

    @Option(name: .long, help: "How many fire times --dry-run prints per entry.")
    var count = 5

    @Option(name: .long, help: "Seconds the leader lock lives without renewal (a standby takes over after it).")
    var lockTimeout: Double = 10

    @Option(name: .long, help: "Seconds after which a missed slot is skipped rather than run late (default: never).")
    var startingDeadline: Double?

    @Option(name: .long, help: "How many sent-task records Redis keeps in <prefix>history (0: none).")
    var historyLimit = 1000

    @Option(name: .long, help: "Prefix of beat's Redis keys.")
    var keyPrefix = "swift-celery:beat:"

    @Option(name: [.customShort("n"), .long], help: "Node name for the messages' origin; %h is the host name.")
    var hostname = "beat@%h"

    @Option(name: [.short, .long], help: "Log level: trace, debug, info, warning, error, critical.")
    var loglevel = "info"

    @Flag(
        name: .long,
        help: """
            Keep all memory mapped: do not give back the executable's unwritten pages after the first step, nor \
            the heap's free pages after each sync or send.
            """
    )
    var keepPages = false

    func validate() throws {
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard lockTimeout.isFinite, lockTimeout >= 0.1, lockTimeout < 1e6 else {
            throw ValidationError("--lock-timeout must be at least 0.1 seconds")
        }
        if let startingDeadline, !(startingDeadline.isFinite && startingDeadline >= 0) {
            throw ValidationError("--starting-deadline must be 0 or more seconds")
        }
        guard historyLimit >= 0 else { throw ValidationError("--history-limit must be 0 or more") }
        guard !keyPrefix.isEmpty else { throw ValidationError("--key-prefix must not be empty") }
        guard Logger.Level(rawValue: loglevel.lowercased()) != nil else {
            throw ValidationError("--loglevel must be one of trace, debug, info, warning, error, critical")
        }
    }

    func run() async throws {
        let file: BeatScheduleFile
        do {
            file = try BeatScheduleFile.load(path: schedule)
        } catch {
            FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
            throw ExitCode(2)
        }
        if dryRun {
            print(Self.dryRun(file, count: count, now: SystemBeatClock().now()), terminator: "")
            return
        }

        let level = Logger.Level(rawValue: loglevel.lowercased()) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "swift-celery.beat")
        let environment = CeleryEnvironment(broker: broker, environment: ProcessInfo.processInfo.environment)
        let brokerConfiguration: RedisConfiguration
        do {
            brokerConfiguration = try environment.brokerConfiguration()
        } catch {
            throw ValidationError("\(error.message)")
        }
        let host = String(WorkerConfiguration.defaultHostname().dropFirst("swift@".count))
        let node = hostname.replacingOccurrences(of: "%h", with: host)
        var configuration = BeatConfiguration(
            origin: node,
            token: "\(node):\(ProcessInfo.processInfo.processIdentifier):\(OutgoingTask.newID().prefix(8))"
        )
        configuration.lockTimeout = Int64((lockTimeout * 1000).rounded())
        configuration.startingDeadline = startingDeadline.map { Int64(($0 * 1000).rounded()) }
        configuration.historyLimit = historyLimit
        configuration.releaseMemory = !keepPages

        let path = schedule
        let service = BeatService(
            configuration: .init(
                redis: brokerConfiguration,
                schedule: file,
                beat: configuration,
                keyPrefix: keyPrefix,
                reload: { () throws(BeatError) in try BeatScheduleFile.load(path: path) }
            ),
            logger: logger
        )
        let scheduler = service.scheduler
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [.sigquit],
                logger: logger
            )
        )
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    logger.info("SIGHUP: reloading the schedule file")
                    scheduler.requestReload()
                }
            }
            try await tasks.next()
            tasks.cancelAll()
        }
    }

    /// Each entry's next `count` fire times from `now`, in UTC and in the crontab's zone.
    static func dryRun(_ file: BeatScheduleFile, count: Int, now: Int64) -> String {
        var out = ""
        for entry in file.entries {
            out += "\(entry.name) (\(entry.task)): \(entry.schedule)\(entry.enabled ? "" : " [disabled]")\n"
            guard entry.enabled else { continue }
            var next = entry.schedule.firstDue(now: now)
            let anchor = next ?? now
            for _ in 0..<count {
                guard let time = next else {
                    out += "  (never again)\n"
                    break
                }
                let instant = CeleryTimestamp(secondsSince1970: Double(time) / 1000)
                var line = "  \(instant.iso8601)"
                if case .crontab(let crontab) = entry.schedule, crontab.zoneName != "UTC" {
                    let formatter = DateFormatter()
                    formatter.timeZone = crontab.timeZone
                    formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ssxxxxx"
                    formatter.locale = Locale(identifier: "en_US_POSIX")
                    line +=
                        "  (\(formatter.string(from: Date(timeIntervalSince1970: Double(time) / 1000))) "
                        + "\(crontab.zoneName))"
                }
                out += line + "\n"
                next = entry.schedule.next(after: time, anchor: anchor)
            }
        }
        return out
    }
}
