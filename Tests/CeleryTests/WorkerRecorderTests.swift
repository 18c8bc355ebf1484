import JSON
import Synchronization
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The executor and the recorder on an in-memory result store and publisher: each outcome's writes, in Celery's
/// order, without Redis.
@Suite("Executor and recorder, in memory")
struct WorkerRecorderTests {
    /// Handlers for the suite; `runs` counts how many times any handler ran.
    static func registry(runs: RunCounter = RunCounter()) -> TaskRegistry {
        var registry = TaskRegistry()
        registry.register("t.add", parameters: ["x", "y"]) { (_, x: Int, y: Int) in
            runs.add()
            return x + y
        }
        registry.register("t.boom", parameters: []) { (_) -> NoResult in
            runs.add()
            throw PythonException.valueError("boom")
        }
        registry.register("t.again", parameters: []) { (_) -> NoResult in
            runs.add()
            throw TaskRetry(countdown: .seconds(5), maxRetries: 2)
        }
        registry.register("t.reshape", parameters: ["x"]) { (_, x: Int) -> NoResult in
            runs.add()
            throw TaskRetry(countdown: .seconds(5), args: [.int(x + 1)], kwargs: ["y": .int(x)])
        }
        registry.register("t.reject", parameters: []) { (_) -> NoResult in
            runs.add()
            throw TaskReject("bad", requeue: false)
        }
        registry.register("t.requeue", parameters: []) { (_) -> NoResult in
            runs.add()
            throw TaskReject("later", requeue: true)
        }
        registry.register("t.quiet", parameters: [], options: TaskOptions(ignoreResult: true)) { _ in 1 }
        return registry
    }

    @Test func aSuccessSendsItsCallbacksThenStoresThenAcksLate() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        let message = try InMemoryWorker.message(
            "t.add",
            id: "ok",
            args: [2, 3],
            callbacks: [InMemoryWorker.signature("t.add", id: "next", args: [10])]
        )
        await memory.worker.execute(message)
        #expect(memory.log.all == [.published(["t.add"]), .result("ok", status: "SUCCESS"), .ack("tag-ok")])
        #expect(memory.log.meta("ok")?["result"] == 5)
        // The callback gets the result prepended, and the task as its parent.
        let callback = try #require(memory.log.published.first)
        #expect(callback.id == "next" && callback.args == [5, 10] && callback.parentID == "ok")
        #expect(memory.log.meta("ok")?["children"] == [[["next", nil], nil]])
    }

    @Test func earlyAckComesBeforeTheHandler() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: false)
        await memory.worker.execute(try InMemoryWorker.message("t.add", id: "early", args: [1, 1]))
        #expect(memory.log.all == [.ack("tag-early"), .result("early", status: "SUCCESS")])
    }

    @Test func aFailureSendsErrbacksThenStoresItThenFailsTheChain() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        let message = try InMemoryWorker.message(
            "t.boom",
            id: "bad",
            errbacks: [InMemoryWorker.signature("t.add", id: "on-error", args: [0])],
            chain: [InMemoryWorker.signature("t.add", id: "later", args: [1])]
        )
        await memory.worker.execute(message)
        #expect(
            memory.log.all == [
                .published(["t.add"]), .result("bad", status: "FAILURE"), .result("later", status: "FAILURE"),
                .ack("tag-bad"),
            ]
        )
        #expect(memory.log.meta("bad")?["result"]?["exc_type"] == "ValueError")
        // An old-style errback gets the failed task's id.
        #expect(memory.log.published.first?.args == ["bad", 0])
    }

    @Test func aRetrySendsTheNextAttemptThenStoresRetryThenAcks() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        await memory.worker.execute(try InMemoryWorker.message("t.again", id: "again"))
        #expect(memory.log.all == [.published(["t.again"]), .result("again", status: "RETRY"), .ack("tag-again")])
        let next = try #require(memory.log.published.first)
        #expect(next.id == "again" && next.retries == 1 && next.eta != nil)
    }

    @Test func aRetryCarriesTheCustomHeadersButNotCeleryOwnNorDeadLetterMarks() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        let message = try InMemoryWorker.message(
            "t.again",
            id: "custom",
            headers: [
                "x-custom": "v", "tenant": ["id": 7], "x-death": [["count": 1]], "redelivered": true,
                "compression": nil, "stamped_headers": nil, "stamps": nil,
            ]
        )
        await memory.worker.execute(message)
        let next = try #require(memory.log.published.first)
        #expect(next.headers == ["x-custom": "v", "tenant": ["id": 7]])
        #expect(next.args == [] && next.kwargs == [:])
    }

    @Test func aRetryWithArgumentsReplacesTheMessageArguments() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        await memory.worker.execute(try InMemoryWorker.message("t.reshape", id: "reshape", args: [4]))
        let next = try #require(memory.log.published.first)
        #expect(next.id == "reshape" && next.retries == 1)
        #expect(next.args == [5] && next.kwargs == ["y": 4])
    }

    @Test func pastItsRetriesATaskFailsAndRunsItsErrbacks() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        let message = try InMemoryWorker.message(
            "t.again",
            id: "spent",
            errbacks: [InMemoryWorker.signature("t.add", id: "on-error", args: [0])],
            headers: ["retries": 2]
        )
        await memory.worker.execute(message)
        #expect(memory.log.all == [.published(["t.add"]), .result("spent", status: "FAILURE"), .ack("tag-spent")])
        #expect(memory.log.meta("spent")?["result"]?["exc_type"] == "MaxRetriesExceededError")
        #expect(memory.log.meta("spent")?["result"]?["exc_message"] == ["Can't retry t.again[spent] args:() kwargs:{}"])
    }

    @Test func aRejectWithoutRequeueIsAFailureWithErrbacksAndTheMessageIsAcked() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        let message = try InMemoryWorker.message(
            "t.reject",
            id: "rejected",
            errbacks: [InMemoryWorker.signature("t.add", id: "on-error", args: [0])]
        )
        await memory.worker.execute(message)
        #expect(
            memory.log.all == [.published(["t.add"]), .result("rejected", status: "FAILURE"), .ack("tag-rejected")]
        )
        let result = memory.log.meta("rejected")?["result"]
        #expect(result?["exc_type"] == "Reject" && result?["exc_module"] == "celery.exceptions")
        #expect(result?["exc_message"] == ["bad", false])
    }

    @Test func aRejectWithRequeueUnderAcksLateGoesToTheBackOfItsQueueWithoutAResult() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        memory.broker.push(InMemoryWorker.envelope("t.requeue", id: "again"))
        let popped = try #require(
            try await memory.broker.startPop(lists: ["q"], limit: 1, stamp: "").deliveries().first
        )
        memory.broker.push(InMemoryWorker.envelope("t.add", id: "queued-meanwhile", args: [1, 2]))
        await memory.worker.execute(try TaskMessage(envelope: popped.envelope))
        #expect(memory.log.all == [])
        #expect(memory.broker.unackedTags.isEmpty && memory.broker.count() == 2)
        // Behind the message queued while it ran, as kombu's reject(requeue=True) puts it (LPUSH).
        let next = try await memory.broker.startPop(lists: ["q"], limit: 2, stamp: "").deliveries()
        #expect(try next.map { try TaskMessage(envelope: $0.envelope).id } == ["queued-meanwhile", "again"])
    }

    @Test func aRejectWithRequeueUnderEarlyAckIsNotRequeued() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: false)
        memory.broker.push(InMemoryWorker.envelope("t.requeue", id: "gone"))
        let popped = try #require(
            try await memory.broker.startPop(lists: ["q"], limit: 1, stamp: "").deliveries().first
        )
        await memory.worker.execute(try TaskMessage(envelope: popped.envelope))
        #expect(memory.log.all == [.ack("tag-gone")])
        #expect(memory.broker.unackedTags.isEmpty && memory.broker.count() == 0)
    }

    @Test func anExpiredTaskIsRevokedAndAckedWithoutRunning() async throws {
        let runs = RunCounter()
        let memory = try InMemoryWorker(registry: Self.registry(runs: runs), acksLate: false)
        let message = try InMemoryWorker.message(
            "t.add",
            id: "old",
            args: [1, 2],
            headers: ["expires": "2001-01-01T00:00:00+00:00"]
        )
        await memory.worker.execute(message)
        #expect(memory.log.all == [.result("old", status: "REVOKED"), .ack("tag-old")])
        #expect(memory.log.meta("old")?["result"]?["exc_message"] == ["expired"])
        #expect(runs.count == 0)
    }

    @Test func aRevokedTaskIsRevokedAndAckedWithoutRunning() async throws {
        let runs = RunCounter()
        let memory = try InMemoryWorker(registry: Self.registry(runs: runs), acksLate: true)
        memory.worker.control.revoked.addLocally(["gone"])
        await memory.worker.execute(try InMemoryWorker.message("t.add", id: "gone", args: [1, 2]))
        #expect(memory.log.all == [.result("gone", status: "REVOKED"), .ack("tag-gone")])
        #expect(runs.count == 0)
    }

    @Test func anUnregisteredTaskFailsAndIsAckedEvenWithEarlyAck() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: false)
        let message = try InMemoryWorker.message(
            "t.missing",
            id: "nobody",
            errbacks: [InMemoryWorker.signature("t.add", id: "on-error", args: [0])]
        )
        await memory.worker.execute(message)
        // Not run, so no errbacks (as Celery).
        #expect(memory.log.all == [.result("nobody", status: "FAILURE"), .ack("tag-nobody")])
        #expect(memory.log.meta("nobody")?["result"]?["exc_type"] == "NotRegistered")
    }

    @Test func anIgnoredResultIsNotStoredButTheMessageIsAcked() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true)
        await memory.worker.execute(try InMemoryWorker.message("t.quiet", id: "quiet"))
        #expect(memory.log.all == [.ack("tag-quiet")])
    }

    @Test func whenTheCallbacksCannotBeSentTheTaskFailsInsteadOfSucceeding() async throws {
        let memory = try InMemoryWorker(registry: Self.registry(), acksLate: true, failingPublisher: true)
        let message = try InMemoryWorker.message(
            "t.add",
            id: "stranded",
            args: [1, 1],
            callbacks: [InMemoryWorker.signature("t.add", id: "never", args: [1])]
        )
        await memory.worker.execute(message)
        #expect(memory.log.all == [.result("stranded", status: "FAILURE"), .ack("tag-stranded")])
        #expect(memory.log.meta("stranded")?["result"]?["exc_type"] == "OperationalError")
    }
}

/// How many times the suite's handlers ran.
final class RunCounter: Sendable {
    private let runs = Mutex(0)
    func add() { runs.withLock { $0 += 1 } }
    var count: Int { runs.withLock { $0 } }
}
