import ArgumentParser
import Celery
import CeleryHotPath

/// `swift-celery hot-path-benchmark`: the worker's per-task CPU path without Redis, for `Benchmarks/hotpath.sh`,
/// which counts its instructions and allocations under valgrind. Hidden: it is a measuring tool, not a feature.
struct HotPathBenchmarkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hot-path-benchmark",
        abstract: "Run tasks through the worker's decode, run and encode path in memory (for instruction counts).",
        shouldDisplay: false
    )

    @Option(help: "How many tasks.")
    var tasks: Int = 2000

    @Option(help: "inputs (only make them), decode, run (decode + run) or all (decode + run + encode).")
    var phase: String = "all"

    func run() async throws {
        guard let phase = HotPathBenchmark.Phase(rawValue: phase) else {
            throw ValidationError("--phase must be inputs, decode, run or all")
        }
        guard tasks >= 0 else { throw ValidationError("--tasks must be 0 or more") }
        let report = try await HotPathBenchmark.run(tasks: tasks, phase: phase)
        print(
            #"{"tasks": \#(report.tasks), "phase": "\#(phase.rawValue)", "result_sum": \#(report.resultSum), "#
                + #""payload_bytes": \#(report.payloadBytes), "command_bytes": \#(report.commandBytes)}"#
        )
    }
}
