import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Foundation
import JSON

/// `swift-celery canvas chain|group|chord SIGNATURE...`: sends a workflow built by the Swift client.
///
/// A signature is `NAME(ARGS)` with ARGS as JSON values (`tasks.add(2, 3)`, `tasks.xsum()`); a leading `!` makes it
/// immutable (`!tasks.identity("x")`: no result prepended).
struct CanvasCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "canvas",
        abstract: "Send a chain, group or chord of Celery tasks and optionally wait for the result.",
        discussion: """
            Signatures are NAME(ARGS) with ARGS as comma-separated JSON values, e.g. 'tasks.add(1, 2)' or \
            'tasks.xsum()'; prefix ! for an immutable signature. chain: each task gets the previous result \
            prepended; group: all at once, the result is the list of results; chord: the header as a group, then \
            --body with the list of their results. Prints the result id (a chain's last task, a group's id, a \
            chord's body), or with --wait the result as JSON. Exit status: 0 success, 1 failed or timed out, \
            2 bad usage.
            """
    )

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case chain, group, chord
    }

    @Argument(help: "chain, group or chord.")
    var kind: Kind

    @Argument(help: "The signatures: NAME(JSON, ...).")
    var signatures: [String] = []

    @Option(help: "The chord body, NAME(JSON, ...).")
    var body: String?

    @Option(name: [.customShort("Q"), .long], help: "The queue of every task (default: celery).")
    var queue: String = "celery"

    @OptionGroup var common: ClientOptions

    func run() async throws {
        let header: [Signature]
        let chordBody: Signature?
        do {
            header = try signatures.map { try Self.parse($0, queue: queue) }
            chordBody = try body.map { try Self.parse($0, queue: queue) }
            guard !header.isEmpty else { throw SendCommand.UsageError(message: "give at least one signature") }
            guard (kind == .chord) == (chordBody != nil) else {
                throw SendCommand.UsageError(message: "--body is required for a chord and only for a chord")
            }
            guard common.timeout.isFinite, common.timeout > 0 else {
                throw SendCommand.UsageError(message: "--timeout must be a positive number")
            }
        } catch let error as SendCommand.UsageError {
            CommandOutput.error(error.message)
            throw ExitCode(2)
        }
        try await CommandOutput.withClient(broker: common.broker, resultBackend: common.resultBackend, queue: queue) {
            client in
            do {
                switch kind {
                case .chain:
                    let result = try await client.chain(header)
                    try await finish(result)
                case .chord:
                    let result = try await client.chord(header, chordBody!)
                    try await finish(result)
                case .group:
                    let result = try await client.group(header)
                    guard common.wait else {
                        print(result.id)
                        return
                    }
                    do {
                        let values = try await result.get(timeout: .milliseconds(Int64(common.timeout * 1000)))
                        print(JSONValue.array(values).serializedString())
                    } catch let failure as TaskFailure {
                        CommandOutput.error("task \(failure.taskID) failed: \(failure)")
                        throw ExitCode.failure
                    }
                }
            } catch let error as CeleryClientError {
                CommandOutput.error(error.message)
                throw ExitCode.failure
            }
        }
    }

    private func finish(_ result: AsyncResult) async throws {
        guard common.wait else {
            print(result.id)
            return
        }
        try await CommandOutput.printResult(of: result, timeout: common.timeout)
    }

    /// `NAME(JSON, ...)`, `!NAME(...)` for an immutable signature.
    static func parse(_ text: String, queue: String) throws -> Signature {
        var text = Substring(text.trimmingCharacters(in: .whitespaces))
        let immutable = text.first == "!"
        if immutable { text = text.dropFirst() }
        guard let open = text.firstIndex(of: "("), text.last == ")" else {
            throw SendCommand.UsageError(message: "a signature is NAME(ARGS), got '\(text)'")
        }
        let name = text[..<open].trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty else { throw SendCommand.UsageError(message: "a signature has no task name: '\(text)'") }
        let inner = text[text.index(after: open)..<text.index(before: text.endIndex)]
        guard let args = (try? JSONValue(parsing: "[" + inner + "]"))?.arrayValue else {
            throw SendCommand.UsageError(message: "the arguments of '\(text)' are not JSON values")
        }
        return Signature(name, args: args, options: SendOptions(queue: queue), immutable: immutable)
    }
}
