import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Foundation
import ProcessTuning

extension RootCommand {
    /// ArgumentParser's `main()`, except that the client commands (`send`, `result`, `canvas`) exit with 2 on bad
    /// usage, as their help says, where ArgumentParser uses 64, and that passwords in URL arguments are masked in
    /// the process's argument vector (`ps`) as soon as the arguments are parsed.
    static func runMain(setup: CommandSetup) async {
        // Before any thread allocates: one malloc arena per core, at least two (ExecutablePages.limitHeapArenas).
        ExecutablePages.limitHeapArenas(
            to: Int32(clamping: max(2, ProcessInfo.processInfo.activeProcessorCount)),
            environment: ProcessInfo.processInfo.environment
        )
        let clientCommand = ["send", "result", "canvas"].contains(CommandLine.arguments.dropFirst().first ?? "")
        do {
            var command = try parseAsRoot()
            // Every subcommand (worker, beat, ping, send, result, canvas) may take a URL with a password.
            ProcessArguments.maskPasswords()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            if clientCommand && exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
