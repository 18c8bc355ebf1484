import ArgumentParser
import Celery
import Testing

@testable import CeleryCLI

@Suite("worker command options")
struct WorkerCommandTests {
    @Test(
        arguments: [
            (nil, [:], WorkerConfiguration.defaultMaximumCrashes),
            (nil, ["SWIFT_CELERY_MAX_CRASHES": "5"], 5),
            (nil, ["SWIFT_CELERY_MAX_CRASHES": ""], WorkerConfiguration.defaultMaximumCrashes),
            (0, ["SWIFT_CELERY_MAX_CRASHES": "5"], 0),
            (2, [:], 2),
        ] as [(Int?, [String: String], Int)]
    )
    func maximumCrashesComesFromTheFlagThenTheEnvironment(
        flag: Int?,
        environment: [String: String],
        expected: Int
    )
        throws
    {
        #expect(try WorkerCommand.maximumCrashes(flag: flag, environment: environment) == expected)
    }

    @Test(
        arguments: [(-1, [:]), (nil, ["SWIFT_CELERY_MAX_CRASHES": "three"]), (nil, ["SWIFT_CELERY_MAX_CRASHES": "-2"])]
            as [(Int?, [String: String])]
    )
    func aNegativeOrUnreadableLimitIsRefused(flag: Int?, environment: [String: String]) {
        #expect(throws: ValidationError.self) {
            try WorkerCommand.maximumCrashes(flag: flag, environment: environment)
        }
    }

    @Test func theFlagParses() throws {
        let command = try WorkerCommand.parse(["--acks-late", "--max-crashes", "4"])
        #expect(command.maxCrashes == 4 && command.acksLate)
    }
}
