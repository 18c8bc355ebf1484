import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Foundation
import JSON
import Logging
import Redis

/// `swift-celery send NAME [ARGS...]`: sends a task as Python's `apply_async` does; with `--wait`, prints its result.
///
/// Exit status: 0 sent (or, with --wait, succeeded); 1 the task failed, was revoked or timed out, or Redis failed
/// (the error on standard error); 2 bad usage.
struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send a Celery task (run by Swift or Python workers) and optionally wait for its result.",
        discussion: """
            Each ARG is parsed as JSON when it parses (2, 1.5, true, null, "text", [1, 2], {"a": 1}), else taken \
            as a string. URLs as for the worker: --broker, else CELERY_BROKER_URL, else REDIS_URL; the result \
            backend is --result-backend, else CELERY_RESULT_BACKEND, else the broker. Prints the task id, or with \
            --wait the result as JSON. Exit status: 0 success, 1 the task failed or timed out (the error is \
            printed), 2 bad usage.
            """
    )

    @Argument(help: "The task name, e.g. tasks.add.")
    var name: String

    @Argument(help: "Positional arguments (JSON, else strings).")
    var args: [String] = []

    @Option(help: "Keyword arguments as one JSON object.")
    var kwargs: String?

    @Option(name: [.customShort("Q"), .long], help: "The queue (default: celery).")
    var queue: String = "celery"

    @Option(help: "Seconds to wait before the task may run.")
    var countdown: Double?

    @Option(help: "Run no earlier than this ISO-8601 time.")
    var eta: String?

    @Option(help: "Seconds after which the task is discarded if it has not started.")
    var expires: Double?

    @Option(help: "Priority 0-9 (0 is the most urgent on Redis).")
    var priority: Int?

    @Option(name: .customLong("task-id"), help: "The task id (default: a new UUID).")
    var taskID: String?

    @Option(name: .customLong("header"), help: "A custom header KEY=VALUE (VALUE as JSON, else a string); repeatable.")
    var headers: [String] = []

    @OptionGroup var common: ClientOptions

    func run() async throws {
        let request: Signature
        do {
            request = try signature()
        } catch let error as UsageError {
            CommandOutput.error(error.message)
            throw ExitCode(2)
        }
        try await CommandOutput.withClient(broker: common.broker, resultBackend: common.resultBackend, queue: queue) {
            client in
            let result: AsyncResult
            do {
                result = try await client.send(request)
            } catch let error as CeleryClientError {
                CommandOutput.error(error.message)
                throw ExitCode.failure
            }
            guard common.wait else {
                print(result.id)
                return
            }
            try await CommandOutput.printResult(of: result, timeout: common.timeout)
        }
    }

    struct UsageError: Error {
        var message: String
    }

    func signature() throws -> Signature {
        guard !name.isEmpty else { throw UsageError(message: "the task name is empty") }
        var options = SendOptions(queue: queue)
        if let countdown {
            guard countdown.isFinite, countdown >= 0 else {
                throw UsageError(message: "--countdown must be a number of seconds, 0 or more")
            }
            options.countdown = .milliseconds(Int64(countdown * 1000))
        }
        if let eta {
            guard let time = CeleryTimestamp(iso8601: eta) else {
                throw UsageError(message: "--eta must be an ISO-8601 time such as 2030-01-01T12:00:00+00:00")
            }
            options.eta = time
        }
        if let expires {
            guard expires.isFinite else { throw UsageError(message: "--expires must be a number of seconds") }
            options.expires = .after(.milliseconds(Int64(expires * 1000)))
        }
        if let priority {
            guard (0...9).contains(priority) else { throw UsageError(message: "--priority must be 0-9") }
            options.priority = priority
        }
        if let taskID {
            guard !taskID.isEmpty else { throw UsageError(message: "--task-id is empty") }
            options.taskID = taskID
        }
        for header in headers {
            guard let equals = header.firstIndex(of: "="), equals != header.startIndex else {
                throw UsageError(message: "--header must be KEY=VALUE, got \(header)")
            }
            options.headers[String(header[..<equals])] = Self.argument(String(header[header.index(after: equals)...]))
        }
        guard common.timeout.isFinite, common.timeout > 0 else {
            throw UsageError(message: "--timeout must be a positive number")
        }
        var keywordArguments: JSONObject = [:]
        if let kwargs {
            guard let object = (try? JSONValue(parsing: kwargs))?.objectValue else {
                throw UsageError(message: "--kwargs must be a JSON object, e.g. '{\"y\": 3}'")
            }
            keywordArguments = object
        }
        return Signature(name, args: args.map(Self.argument), kwargs: keywordArguments, options: options)
    }

    /// JSON when the text parses as JSON, else the text as a string.
    static func argument(_ text: String) -> JSONValue {
        (try? JSONValue(parsing: text)) ?? .string(text)
    }
}
