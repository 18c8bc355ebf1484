import Foundation
import JSON
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The whole worker — consumer, state machine, executors, recorder — running on an in-memory broker and result
/// store: no Redis. What kombu's layout adds is proved by the Redis and interop suites.
@Suite("Worker on an in-memory broker")
struct WorkerInMemoryTests {
    static func registry(runs: RunCounter) -> TaskRegistry {
        var registry = TaskRegistry()
        registry.register("t.add", parameters: ["x", "y"]) { (_, x: Int, y: Int) in
            runs.add()
            return x + y
        }
        registry.register("t.slow", parameters: []) { (_) -> NoResult in
            runs.add()
            try await Task.sleep(for: .milliseconds(300))
            return NoResult()
        }
        return registry
    }

    /// Runs the worker while `body` runs, then stops it (warm shutdown) and waits for it to end.
    static func running(_ memory: InMemoryWorker, _ body: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await memory.worker.run() }
            let deadline = ContinuousClock.now + .seconds(10)
            while !memory.worker.isReady, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            #expect(memory.worker.isReady)
            do {
                try await body()
            } catch {
                memory.worker.stop()
                throw error
            }
            memory.worker.stop()
            try await group.waitForAll()
        }
    }

    static func waitFor(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
    }

    @Test func everyMessageRunsOnceAndIsAcked() async throws {
        let runs = RunCounter()
        let memory = try InMemoryWorker(
            registry: Self.registry(runs: runs),
            configuration: WorkerConfiguration(queues: ["q"], concurrency: 4, hostname: "memory@test", acksLate: true)
        )
        let ids = (0..<60).map { "add-\($0)" }
        for (index, id) in ids.enumerated() {
            memory.broker.push(InMemoryWorker.envelope("t.add", id: id, args: [.int(index), 1]))
        }
        try await Self.running(memory) {
            try await Self.waitFor { memory.log.all.filter { if case .ack = $0 { true } else { false } }.count == 60 }
        }
        #expect(memory.broker.declared == ["q"])
        #expect(runs.count == 60)
        for (index, id) in ids.enumerated() {
            #expect(memory.log.meta(id)?["result"] == JSONValue.int(index + 1))
        }
        let results = memory.log.all.filter { if case .result = $0 { true } else { false } }
        #expect(results.count == 60)
        #expect(memory.broker.unackedTags.isEmpty && memory.broker.count() == 0)
    }

    @Test func aWarmShutdownGivesBackExactlyWhatDidNotStart() async throws {
        let runs = RunCounter()
        // Two run at once; eight are fetched (prefetch 2 × 4), two stay in the list.
        let memory = try InMemoryWorker(
            registry: Self.registry(runs: runs),
            configuration: WorkerConfiguration(
                queues: ["q"],
                concurrency: 2,
                hostname: "memory@test",
                prefetchMultiplier: 4,
                acksLate: true
            )
        )
        for index in 0..<10 { memory.broker.push(InMemoryWorker.envelope("t.slow", id: "slow-\(index)")) }
        try await Self.running(memory) {
            try await Self.waitFor { runs.count == 2 && memory.broker.count() == 2 }
            #expect(memory.broker.unackedTags.count == 8)
        }
        // The two that ran finished and were acked; the six reserved came back; nothing is left unacked.
        #expect(runs.count == 2)
        #expect(memory.log.all.filter { if case .ack = $0 { true } else { false } }.count == 2)
        #expect(memory.broker.count() == 8)
        #expect(memory.broker.unackedTags.isEmpty)
    }

    @Test func anETAMessageWaitsWithoutStarvingTheQueue() async throws {
        let runs = RunCounter()
        var configuration = WorkerConfiguration(
            queues: ["q"],
            concurrency: 1,
            hostname: "memory@test",
            prefetchMultiplier: 1,
            acksLate: true
        )
        configuration.maximumHeld = 10
        configuration.parkETAAfter = nil
        let memory = try InMemoryWorker(registry: Self.registry(runs: runs), configuration: configuration)
        let later = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 + 3600)
        memory.broker.push(
            InMemoryWorker.envelope("t.add", id: "later", args: [1, 1], headers: ["eta": .string(later.iso8601)])
        )
        let soon = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 + 0.3)
        memory.broker.push(
            InMemoryWorker.envelope("t.add", id: "soon", args: [2, 2], headers: ["eta": .string(soon.iso8601)])
        )
        for index in 0..<5 { memory.broker.push(InMemoryWorker.envelope("t.add", id: "now-\(index)", args: [0, 0])) }
        try await Self.running(memory) {
            try await Self.waitFor {
                memory.log.meta("soon") != nil && (0..<5).allSatisfy { memory.log.meta("now-\($0)") != nil }
            }
            #expect(memory.log.meta("later") == nil)
            #expect(memory.broker.unackedTags == ["tag-later"])
        }
        #expect(memory.log.meta("soon")?["result"] == 4)
        #expect(CeleryTimestamp.now() >= soon)
        // The held message goes back at shutdown.
        #expect(memory.broker.count() == 1 && memory.broker.unackedTags.isEmpty)
        #expect(runs.count == 6)
    }

    @Test func anETAMessageDueLaterIsParkedAndComesBackWhenDue() async throws {
        let runs = RunCounter()
        var configuration = WorkerConfiguration(
            queues: ["q"],
            concurrency: 1,
            hostname: "memory@test",
            prefetchMultiplier: 1,
            acksLate: true
        )
        configuration.parkETAAfter = .milliseconds(400)
        let memory = try InMemoryWorker(registry: Self.registry(runs: runs), configuration: configuration)
        let later = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 + 3600)
        memory.broker.push(
            InMemoryWorker.envelope("t.add", id: "later", args: [1, 1], headers: ["eta": .string(later.iso8601)])
        )
        let soon = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 + 1.2)
        memory.broker.push(
            InMemoryWorker.envelope("t.add", id: "soon", args: [2, 2], headers: ["eta": .string(soon.iso8601)])
        )
        for index in 0..<5 { memory.broker.push(InMemoryWorker.envelope("t.add", id: "now-\(index)", args: [0, 0])) }
        try await Self.running(memory) {
            // Both are parked at first (due further ahead than 0.4 s): the plain ones run meanwhile.
            try await Self.waitFor { (0..<5).allSatisfy { memory.log.meta("now-\($0)") != nil } }
            try await Self.waitFor { memory.log.meta("soon") != nil }
            #expect(memory.log.meta("later") == nil)
            #expect(memory.broker.unackedTags.isEmpty)
            #expect(memory.broker.parkedCount == 1)
        }
        #expect(memory.log.meta("soon")?["result"] == 4)
        #expect(CeleryTimestamp.now() >= soon)
        // The parked message stays parked at shutdown: no worker holds it.
        #expect(memory.broker.count() == 0 && memory.broker.unackedTags.isEmpty && memory.broker.parkedCount == 1)
        #expect(runs.count == 6)
    }

    @Test func aHandlersOwnStatesAreStoredBeforeItsResult() async throws {
        var registry = TaskRegistry()
        registry.register("t.progress", parameters: ["steps"]) { (context, steps: Int) in
            for step in 1...steps {
                context.updateState("PROGRESS", meta: ["current": .int(step), "total": .int(steps)])
            }
            return steps
        }
        registry.register("t.quiet", parameters: [], options: TaskOptions(ignoreResult: true)) {
            (context) -> NoResult in
            context.updateState("PROGRESS", meta: ["current": 1])
            return NoResult()
        }
        let memory = try InMemoryWorker(
            registry: registry,
            configuration: WorkerConfiguration(queues: ["q"], concurrency: 1, hostname: "memory@test")
        )
        memory.broker.push(InMemoryWorker.envelope("t.progress", id: "p", args: [3]))
        memory.broker.push(InMemoryWorker.envelope("t.quiet", id: "quiet"))
        try await Self.running(memory) {
            try await Self.waitFor {
                memory.log.meta("p")?["status"] == "SUCCESS" && memory.broker.unackedTags.isEmpty
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let writes = memory.log.all.filter { if case .result = $0 { true } else { false } }
        #expect(
            writes == [
                .result("p", status: "PROGRESS"), .result("p", status: "PROGRESS"), .result("p", status: "PROGRESS"),
                .result("p", status: "SUCCESS"),
            ]
        )
        #expect(memory.log.meta("p")?["result"] == 3)
        // A task whose results are ignored stores none of its states either.
        #expect(memory.log.meta("quiet") == nil)
    }
}
