import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Foundation
import JSON
import Logging
import Redis

/// `swift-celery result ID`: prints a task's result (or waits for it).
struct ResultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "result",
        abstract: "Print the result of a Celery task.",
        discussion: """
            Prints the result as JSON when the task succeeded (exit 0). A failed or revoked task prints its error \
            (exit 1); a task not finished yet prints its state (PENDING, STARTED, RETRY) and exits 1, unless --wait \
            waits for it. --state prints only the state (exit 0). --forget deletes the stored result.
            """
    )

    @Argument(help: "The task id.")
    var id: String

    @Flag(help: "Print only the state.")
    var state = false

    @Flag(help: "Delete the stored result.")
    var forget = false

    @OptionGroup var common: ClientOptions

    func run() async throws {
        guard !id.isEmpty else {
            CommandOutput.error("the task id is empty")
            throw ExitCode(2)
        }
        guard common.timeout.isFinite, common.timeout > 0 else {
            CommandOutput.error("--timeout must be a positive number")
            throw ExitCode(2)
        }
        try await CommandOutput.withClient(
            broker: common.broker,
            resultBackend: common.resultBackend,
            queue: "celery"
        ) { client in
            let result = client.result(id)
            do {
                if forget {
                    try await result.forget()
                    return
                }
                if state {
                    print(try await result.state())
                    return
                }
                if !common.wait {
                    guard let meta = try await result.meta() else {
                        CommandOutput.error("task \(id) is PENDING")
                        throw ExitCode.failure
                    }
                    let status = meta["status"]?.stringValue ?? "?"
                    guard TaskState(rawValue: status)?.isReady == true else {
                        CommandOutput.error("task \(id) is \(status)")
                        throw ExitCode.failure
                    }
                }
            } catch let error as CeleryClientError {
                CommandOutput.error(error.message)
                throw ExitCode.failure
            }
            try await CommandOutput.printResult(of: result, timeout: common.wait ? common.timeout : 1)
        }
    }
}
