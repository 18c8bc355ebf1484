import ArgumentParser

@main
struct SwiftCelery: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swift-celery",
        abstract: "A Celery worker and beat scheduler in Swift, wire-compatible with Python Celery 5 on Redis.",
        subcommands: [
            WorkerCommand.self, PingCommand.self, BeatCommand.self, SendCommand.self, ResultCommand.self,
            CanvasCommand.self, HotPathBenchmarkCommand.self,
        ],
        defaultSubcommand: WorkerCommand.self
    )
}
