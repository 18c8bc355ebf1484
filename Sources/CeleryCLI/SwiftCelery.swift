import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Dispatch
import Foundation

/// The whole `swift-celery` command line for a package's own tasks: `worker`, `beat`, `send`, `result`, `canvas`,
/// `ping` and `stubs`, as `celery -A proj worker` runs a Python team's module.
///
/// ```swift
/// import CeleryCLI
///
/// @main
/// enum MyWorker {
///     static func main() {
///         SwiftCelery.main { registry in
///             registry.register("proj.add", parameters: ["x", "y"]) { (_, x: Int, y: Int) in x + y }
///         }
///     }
/// }
/// ```
public enum SwiftCelery {
    /// Parses the process's arguments, runs the subcommand with the tasks `register` adds, and exits.
    ///
    /// - Parameters:
    ///   - commandName: the name help and errors show (default: the executable's file name).
    ///   - commands: further subcommands of the package's own, listed after the built-in ones.
    ///   - register: adds the package's handlers to the registry every subcommand uses.
    public static func main(
        commandName: String? = nil,
        commands: [any ParsableCommand.Type] = [],
        register: (inout TaskRegistry) -> Void
    ) -> Never {
        var registry = TaskRegistry()
        register(&registry)
        let setup = CommandSetup(
            registry: registry,
            commandName: commandName ?? Self.executableName(),
            extraCommands: commands
        )
        // The command runs on a task of its own while the main thread waits for it. An `async` main would park
        // the main thread in `dispatch_main`, which leaves it through `pthread_exit`: that unwinds the main
        // thread's stack through the binary's unwind tables and so keeps about 1 MiB of them resident in every
        // idle worker (`Benchmarks/resident.py` shows which pages of the binary are resident).
        let finished = DispatchSemaphore(value: 0)
        Task.detached {
            await CommandSetup.$current.withValue(setup) {
                await RootCommand.runMain(setup: setup)
            }
            finished.signal()
        }
        finished.wait()
        exit(0)
    }

    /// The file name the process was started as (`argv[0]` without its directory).
    static func executableName() -> String {
        let path = CommandLine.arguments.first ?? "swift-celery"
        return path.split(separator: "/").last.map(String.init) ?? "swift-celery"
    }
}

/// What the package calling ``SwiftCelery/main(commandName:commands:register:)`` gave: its tasks, its name and its
/// own subcommands, for the subcommands that ArgumentParser makes from the arguments.
struct CommandSetup: Sendable {
    var registry: TaskRegistry
    var commandName: String
    var extraCommands: [any ParsableCommand.Type]

    /// Set around the run of every command; the default serves tests that run a command directly.
    @TaskLocal static var current = CommandSetup(
        registry: TaskRegistry(),
        commandName: "swift-celery",
        extraCommands: []
    )
}

/// The root command: its subcommands are the built-in ones and the package's own.
struct RootCommand: AsyncParsableCommand {
    static let builtIn: [any ParsableCommand.Type] = [
        WorkerCommand.self, PingCommand.self, BeatCommand.self, SendCommand.self, ResultCommand.self,
        CanvasCommand.self, StubsCommand.self,
    ]

    static var configuration: CommandConfiguration {
        let setup = CommandSetup.current
        return CommandConfiguration(
            commandName: setup.commandName,
            abstract: "A Celery worker and beat scheduler in Swift, wire-compatible with Python Celery 5 on Redis.",
            subcommands: builtIn + setup.extraCommands,
            defaultSubcommand: WorkerCommand.self
        )
    }
}
