import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Foundation
import Logging
import NIOCore
import NIOPosix
import Redis
import ServiceLifecycle
import UnixSignals

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Consume Celery tasks from Redis and run the Swift handlers.",
        discussion: """
            URLs: --broker, else CELERY_BROKER_URL, else REDIS_URL, else redis://127.0.0.1:6379/0. The result backend \
            is --result-backend, else CELERY_RESULT_BACKEND, else the broker. REDIS_PASSWORD is used for any URL \
            that has no password. SIGTERM or SIGINT: warm shutdown.
            """
    )

    @Option(name: [.short, .long], help: "Broker URL (redis://, rediss://, unix://).")
    var broker: String?

    @Option(name: .long, help: "Result backend URL.")
    var resultBackend: String?

    @Option(name: [.customShort("Q"), .long], help: "Comma-separated queues to consume.")
    var queues: String = "celery"

    @Option(name: [.short, .long], help: "How many tasks run at once.")
    var concurrency: Int = 16

    @Option(name: [.customShort("n"), .long], help: "Node name; %h is replaced by the host name.")
    var hostname: String = "swift@%h"

    @Option(name: [.short, .long], help: "Log level: trace, debug, info, warning, error, critical.")
    var loglevel: String = "info"

    @Option(name: .long, help: "Fetch at most concurrency × this many messages ahead.")
    var prefetchMultiplier: Int = 4

    @Option(name: .long, help: "Seconds results are kept; 0 keeps them forever.")
    var resultExpires: Int = 86400

    @Flag(name: .long, help: "Store task name, args, kwargs, worker, retries and queue with results.")
    var resultExtended = false

    @Flag(name: .long, help: "Store STARTED before a task runs.")
    var trackStarted = false

    @Flag(name: .long, help: "Ack after the result is stored instead of before the task runs.")
    var acksLate = false

    @Option(
        name: .long,
        help: """
            ETA/countdown messages held in memory beyond the prefetch count; past it the next ones are parked in \
            Redis (with --park-eta-after off, fetching pauses instead).
            """
    )
    var maxHeld: Int = 10_000

    @Option(
        name: .long,
        help: """
            Seconds: ETA/countdown messages due further ahead are parked in Redis (a sorted set per queue) instead \
            of held in memory, and come back to their queue when due within half of it; 'off' holds all in memory.
            """
    )
    var parkEtaAfter: String = "30"

    @Option(
        name: .long,
        help: "Seconds a warm shutdown waits for running tasks before it turns cold (default: no limit)."
    )
    var shutdownTimeout: Double?

    @Option(
        name: .long,
        help: """
            Idle wait: 'blmove' (a BLMOVE wake-up that leaves the message in place, then the atomic pop: low latency, \
            nothing lost on kill -9), 'poll' (the atomic pop, backing off to 25 ms) or 'brpop' (kombu's).
            """
    )
    var idleFetch: String = "blmove"

    @Option(name: .long, help: "Seconds before a message a dead worker left in unacked goes back to its queue.")
    var visibilityTimeout: Double = 3600

    @Option(
        name: .long,
        help: """
            With --acks-late: a task that was running each time its worker died this many times is failed with \
            WorkerLostError instead of delivered again (0: off; else SWIFT_CELERY_MAX_CRASHES, else 3).
            """
    )
    var maxCrashes: Int?

    @Option(
        name: .long,
        help:
            "Largest message accepted, e.g. 64MiB, 512k, 1048576 (0: no limit); larger ones are dead-lettered unparsed."
    )
    var maxMessageSize: String = "64MiB"

    @Flag(name: [.customShort("E"), .long], help: "Send task events (Flower, celery events).")
    var taskEvents = false

    @Flag(name: .long, help: "Send no worker-heartbeat events (worker-online and -offline still go out).")
    var withoutHeartbeat = false

    @Flag(
        name: .long,
        help: """
            Keep code pages mapped (by default the worker gives back to the page cache the pages of its executable \
            once ready, and after 30 s without tasks; those it runs again come back on use).
            """
    )
    var keepPages = false

    @Option(name: .long, help: "Seconds without a task before the worker releases code pages again (see --keep-pages).")
    var idlePageRelease: Double = 30

    @Option(
        name: .long,
        help: """
            Milliseconds: an idle worker runs a task that arrives alone on the thread that read it if the handler's \
            recent runs took less than this (0: never; a handler that then runs longer holds up Redis I/O meanwhile).
            """
    )
    var inlineLimit: Double = 1

    @Option(name: .long, help: "Serve /metrics (Prometheus) and /healthz on this port (0: any free port).")
    var metricsPort: Int?

    @Option(name: .long, help: "The address the metrics endpoint listens on.")
    var metricsHost: String = "0.0.0.0"

    @Option(name: .long, help: "Log format: text or json (one JSON object per line).")
    var logFormat: String = "text"

    func validate() throws {
        guard ByteSize(parsing: maxMessageSize) != nil else {
            throw ValidationError(
                "--max-message-size must be a number of bytes with an optional unit (k, M, G), got '\(maxMessageSize)'"
            )
        }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw ValidationError("--metrics-port must be between 0 and 65535, got \(metricsPort)")
        }
        guard ["text", "json"].contains(logFormat) else {
            throw ValidationError("--log-format must be text or json, got \(logFormat)")
        }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1, got \(concurrency)") }
        guard prefetchMultiplier >= 0 else {
            throw ValidationError("--prefetch-multiplier must be 0 or more, got \(prefetchMultiplier)")
        }
        guard WorkerConfiguration.IdleFetch(rawValue: idleFetch) != nil else {
            throw ValidationError("--idle-fetch must be blmove, poll or brpop, got \(idleFetch)")
        }
        if let shutdownTimeout, !(shutdownTimeout > 0 && shutdownTimeout.isFinite) {
            throw ValidationError("--shutdown-timeout must be a positive number of seconds")
        }
        _ = try Self.maximumCrashes(flag: maxCrashes, environment: ProcessInfo.processInfo.environment)
        guard maxHeld >= 0 else { throw ValidationError("--max-held must be 0 or more, got \(maxHeld)") }
        guard parkETAAfter != nil || parkEtaAfter == "off" else {
            throw ValidationError("--park-eta-after must be 0 or more seconds, or off, got '\(parkEtaAfter)'")
        }
        guard visibilityTimeout > 0, visibilityTimeout.isFinite else {
            throw ValidationError("--visibility-timeout must be a positive number of seconds")
        }
        guard idlePageRelease > 0, idlePageRelease <= 86_400 else {
            throw ValidationError("--idle-page-release must be more than 0 and at most 86400 seconds")
        }
        guard inlineLimit >= 0, inlineLimit <= 1000 else {
            throw ValidationError("--inline-limit must be between 0 and 1000 milliseconds, got \(inlineLimit)")
        }
        guard resultExpires >= 0 else { throw ValidationError("--result-expires must be 0 or more seconds") }
        guard !queueList.isEmpty else { throw ValidationError("--queues names no queue") }
        guard Logger.Level(rawValue: loglevel.lowercased()) != nil else {
            throw ValidationError("--loglevel must be one of trace, debug, info, warning, error, critical")
        }
    }

    /// `--park-eta-after` as a duration; nil for `off` or a value that is not 0 or more seconds.
    var parkETAAfter: Duration? {
        guard let seconds = Double(parkEtaAfter), seconds >= 0, seconds <= 31_536_000 else { return nil }
        return .milliseconds(Int64(seconds * 1000))
    }

    /// `--max-crashes`, else `SWIFT_CELERY_MAX_CRASHES`, else 3.
    static func maximumCrashes(flag: Int?, environment: [String: String]) throws(ValidationError) -> Int {
        if let flag {
            guard flag >= 0 else { throw ValidationError("--max-crashes must be 0 or more, got \(flag)") }
            return flag
        }
        guard let text = environment["SWIFT_CELERY_MAX_CRASHES"], !text.isEmpty else {
            return WorkerConfiguration.defaultMaximumCrashes
        }
        guard let value = Int(text.trimmingCharacters(in: .whitespaces)), value >= 0 else {
            throw ValidationError("SWIFT_CELERY_MAX_CRASHES must be a number, 0 or more, got '\(text)'")
        }
        return value
    }

    var queueList: [String] {
        queues.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func run() async throws {
        ProcessArguments.maskPasswords()
        let level = Logger.Level(rawValue: loglevel.lowercased()) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "swift-celery")

        let environment = CeleryEnvironment(
            broker: broker,
            resultBackend: resultBackend,
            environment: ProcessInfo.processInfo.environment
        )
        let node = hostname.replacingOccurrences(
            of: "%h",
            with: String(WorkerConfiguration.defaultHostname().dropFirst("swift@".count))
        )
        let registry = CommandSetup.current.registry

        var workerConfiguration = WorkerConfiguration(
            queues: queueList,
            concurrency: concurrency,
            hostname: node,
            prefetchMultiplier: prefetchMultiplier,
            resultExpires: resultExpires == 0 ? nil : .seconds(resultExpires),
            resultExtended: resultExtended,
            trackStarted: trackStarted,
            acksLate: acksLate,
            visibilityTimeout: .milliseconds(Int64(visibilityTimeout * 1000))
        )
        workerConfiguration.maximumHeld = maxHeld
        workerConfiguration.parkETAAfter = parkETAAfter
        workerConfiguration.maximumCrashes = try Self.maximumCrashes(
            flag: maxCrashes,
            environment: ProcessInfo.processInfo.environment
        )
        workerConfiguration.maximumMessageSize = ByteSize(parsing: maxMessageSize)?.bytes ?? 0
        workerConfiguration.idleFetch = WorkerConfiguration.IdleFetch(rawValue: idleFetch) ?? .blmove
        workerConfiguration.taskEvents = taskEvents
        workerConfiguration.releasePages = !keepPages
        workerConfiguration.idlePageRelease = .milliseconds(Int64(idlePageRelease * 1000))
        workerConfiguration.inlineHandlerLimit = .microseconds(Int64(inlineLimit * 1000))
        if withoutHeartbeat { workerConfiguration.heartbeatInterval = nil }
        let metrics = metricsPort == nil ? WorkerMetrics() : WorkerMetrics.prometheus()
        let service: WorkerService
        do {
            service = try WorkerService(
                configuration: .init(environment: environment, worker: workerConfiguration),
                registry: registry,
                metrics: metrics,
                logger: logger
            )
        } catch {
            throw ValidationError("\(error.message)")
        }
        let worker = service.worker
        // The first SIGTERM/SIGINT is a warm shutdown. A second one, SIGQUIT (as Celery), or --shutdown-timeout
        // is a cold shutdown: running handlers are cancelled and every unfinished message is given back.
        // The monitoring server comes first: services stop in reverse order, so /healthz answers 503 while the
        // worker drains.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)
        ]
        if let metricsPort {
            let server = MonitoringServer(host: metricsHost, port: metricsPort, worker: worker, logger: logger)
            services.insert(.init(service: server), at: 0)
        }
        var groupConfiguration = ServiceGroupConfiguration(
            // `celery control shutdown` stops the worker by itself: that ends the group normally (exit 0).
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [.sigquit],
            logger: logger
        )
        if let shutdownTimeout {
            groupConfiguration.maximumGracefulShutdownDuration = .milliseconds(Int64(shutdownTimeout * 1000))
        }
        let group = ServiceGroup(configuration: groupConfiguration)
        try await withThrowingTaskGroup(of: Bool.self) { tasks in
            tasks.addTask {
                try await group.run()
                return true
            }
            tasks.addTask {
                var signals = 0
                for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                    signals += 1
                    if signals == 2 { return false }
                }
                return false
            }
            // The group ends (normally after the warm shutdown), or the second signal comes first.
            if try await tasks.next() == false {
                logger.warning("second signal: cold shutdown")
            }
            tasks.cancelAll()
            try await tasks.waitForAll()
        }
    }
}
