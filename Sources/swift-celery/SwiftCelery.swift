import ArgumentParser
import Dispatch

/// The process's entry point: the command runs on a task of its own while the main thread waits for it.
///
/// An `async` main would park the main thread in `dispatch_main`, which leaves it through `pthread_exit`: that
/// unwinds the main thread's stack through the binary's unwind tables and so keeps about 1 MiB of them resident
/// in every idle worker (`Benchmarks/resident.py` shows which pages of the binary are resident). Nothing in the
/// program uses the main actor.
@main
enum SwiftCeleryEntry {
    static func main() {
        let finished = DispatchSemaphore(value: 0)
        Task.detached {
            await SwiftCelery.runMain()
            finished.signal()
        }
        finished.wait()
    }
}

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
