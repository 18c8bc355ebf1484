import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Chords on the Redis backend (docs/protocol.md §3.5) run by in-process workers against the real redis-server.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerChordTests {
    /// The callback signature as a Celery 5.7 client puts it in `embed.chord`.
    static func callback(_ name: String, id: String, groupID: String, args: [JSONValue] = []) -> JSONValue {
        [
            "task": .string(name), "args": .array(args), "kwargs": [:],
            "options": ["task_id": .string(id), "reply_to": "client-oid", "group_id": .string(groupID)],
            "subtask_type": nil, "immutable": false,
        ]
    }

    /// Header messages as Celery 5.7's `chord(...).apply_async()` publishes them, and the size key it sets before
    /// the last one.
    static func sendChord(
        _ header: [OutgoingTask],
        callback: JSONValue,
        groupID: String,
        redis: RedisClient,
        setSize: Bool = true
    ) async throws {
        var tasks = header
        for index in tasks.indices {
            tasks[index].groupID = groupID
            tasks[index].groupIndex = index
            tasks[index].chord = callback
        }
        for task in tasks.dropLast() { try await TestRedis.push(redis, task.list, task.envelope()) }
        if setSize {
            try await redis.send(RESPCommand("DEL", "celery-taskset-meta-\(groupID).c"))
            try await redis.send(
                RESPCommand("SET", "celery-taskset-meta-\(groupID).s", String(tasks.count), "EX", 86400)
            )
        }
        try await TestRedis.push(redis, tasks[tasks.count - 1].list, tasks[tasks.count - 1].envelope())
    }

    static func exists(_ redis: RedisClient, _ key: String) async throws -> Bool {
        try await redis.send(RESPCommand("EXISTS", key)).int == 1
    }

    @Test func callbackGetsTheResultsInHeaderOrder() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 8)) { _, redis in
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            // Later headers sleep less, so they finish out of order; the callback still sees header order.
            let header = (0..<6).map { index in
                OutgoingTask(name: "tasks.sleep", args: [.double(Double(6 - index) * 0.02)], queue: queue)
            }
            try await Self.sendChord(
                header,
                callback: Self.callback("tasks.echo", id: callbackID, groupID: groupID, args: ["tail"]),
                groupID: groupID,
                redis: redis
            )
            let meta = try await TestRedis.result(redis, callbackID)
            #expect(meta["status"] == "SUCCESS")
            #expect(meta["result"] == ["args": [.array(header.map { $0.args[0] }), "tail"], "kwargs": [:]])
            #expect(meta["group_id"] == .string(groupID))
            #expect(meta["parent_id"]?.stringValue.map { id in header.contains { $0.id == id } } == true)
            for task in header {
                let part = try await TestRedis.result(redis, task.id)
                #expect(part["group_id"] == .string(groupID))
            }
            // Cleaned up, and marked done so a late duplicate changes nothing.
            for suffix in [".j", ".s", ".d", ".t"] {
                #expect(try await Self.exists(redis, "celery-taskset-meta-\(groupID)\(suffix)") == false)
            }
            let claim = try await redis.send(RESPCommand("GET", "celery-taskset-meta-\(groupID).c"))
            #expect(claim.string == "done")
        }
    }

    @Test func aHeaderTaskAddsTasksAndAChordToItsChord() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 8)) { _, redis in
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            // add_to_all_to_chord adds add(10, 1) and add(20, 1); add_chord_to_chord adds chord(add(1, 1), add(2, 1))
            // | xsum: the callback gets 0, 11, 21, 0, 5 and the plain header's 3.
            let header = [
                OutgoingTask(name: "tasks.add_to_all_to_chord", args: [[10, 20], 1], queue: queue),
                OutgoingTask(name: "tasks.add_chord_to_chord", args: [[1, 2], 1], queue: queue),
                OutgoingTask(name: "tasks.add", args: [1, 2], queue: queue),
            ]
            try await Self.sendChord(
                header,
                callback: Self.callback("tasks.xsum", id: callbackID, groupID: groupID),
                groupID: groupID,
                redis: redis
            )
            let meta = try await TestRedis.result(redis, callbackID)
            #expect(meta["status"] == "SUCCESS")
            #expect(meta["result"] == 40)
        }
    }

    @Test func aFailedChordFailsTheChainAfterItsBody() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 4)) { _, redis in
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            let nextID = OutgoingTask.newID()
            let laterBodyID = OutgoingTask.newID()
            // chord([fail], xsum) | add(1) | chord([add(1)], identity): both later steps fail with the chord's error.
            let later = Canvas.chord(
                [WorkerCanvasTests.signature("tasks.add", [1])],
                body: WorkerCanvasTests.signature("tasks.identity", id: laterBodyID)
            )
            var callback = Self.callback("tasks.xsum", id: callbackID, groupID: groupID)
            callback = Canvas.setting(
                ["chain": [later, WorkerCanvasTests.signature("tasks.add", [1], id: nextID)]],
                on: callback
            )
            try await Self.sendChord(
                [OutgoingTask(name: "tasks.fail", args: ["boom"], queue: queue)],
                callback: callback,
                groupID: groupID,
                redis: redis
            )
            #expect(try await TestRedis.result(redis, callbackID)["status"] == "FAILURE")
            #expect(try await TestRedis.result(redis, nextID)["status"] == "FAILURE")
            #expect(try await TestRedis.result(redis, laterBodyID)["status"] == "FAILURE")
        }
    }

    @Test func aFrozenChordAppliedAgainCountsThePartsSentBeforeTheReset() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // Celery's client sends every header task but the last before set_chord_size resets the chord (DEL
            // .c, SET .s): applying a frozen chord again, the first part can find the last run's `done` marker.
            let groupID = OutgoingTask.newID()
            let key = "count-\(groupID)"
            var callback = Self.callback("tasks.incr", id: OutgoingTask.newID(), groupID: groupID, args: [.string(key)])
            if case .object(var object) = callback {
                object["immutable"] = true
                callback = .object(object)
            }
            let header = [
                OutgoingTask(name: "tasks.add", args: [1, 2], queue: queue),
                OutgoingTask(name: "tasks.add", args: [3, 4], queue: queue),
            ]
            try await Self.sendChord(header, callback: callback, groupID: groupID, redis: redis)
            #expect(try await Self.counts(redis, key, to: 1))
            // The second run: the first part goes out, is run and finds `done`; then the reset and the last part.
            var again = header
            for index in again.indices {
                again[index].groupID = groupID
                again[index].groupIndex = index
                again[index].chord = callback
            }
            try await TestRedis.push(redis, again[0].list, again[0].envelope())
            try await Task.sleep(for: .milliseconds(300))
            try await redis.send(RESPCommand("DEL", "celery-taskset-meta-\(groupID).c"))
            try await redis.send(RESPCommand("SET", "celery-taskset-meta-\(groupID).s", "2", "EX", 86400))
            try await TestRedis.push(redis, again[1].list, again[1].envelope())
            #expect(try await Self.counts(redis, key, to: 2))
        }
    }

    /// Whether `key` reaches `value` within 10 s.
    static func counts(_ redis: RedisClient, _ key: String, to value: Int) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if let bytes = try await redis.send(RESPCommand("GET", key)).bytes, String(buffer: bytes) == "\(value)" {
                return true
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    @Test func failedHeaderStoresChordErrorForTheCallback() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 4)) { _, redis in
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            let errbackID = OutgoingTask.newID()
            var callback = Self.callback("tasks.xsum", id: callbackID, groupID: groupID)
            if case .object(var object) = callback, case .object(var options)? = object["options"] {
                options["link_error"] = [
                    [
                        "task": "tasks.identity", "args": [], "kwargs": [:], "options": ["task_id": .string(errbackID)],
                        "subtask_type": nil, "immutable": false,
                    ]
                ]
                object["options"] = .object(options)
                callback = .object(object)
            }
            let failing = OutgoingTask(name: "tasks.fail", args: ["hdr"], queue: queue)
            let header = [OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue), failing]
            try await Self.sendChord(header, callback: callback, groupID: groupID, redis: redis)
            let meta = try await TestRedis.result(redis, callbackID)
            #expect(meta["status"] == "FAILURE")
            #expect(
                meta["result"] == [
                    "exc_type": "ChordError",
                    "exc_message": [.string("Dependency \(failing.id) raised ValueError('hdr')")],
                    "exc_module": "celery.exceptions",
                ]
            )
            // The callback's errback runs with the callback's id.
            #expect(try await TestRedis.result(redis, errbackID)["result"] == .string(callbackID))
            // The callback's failure lists the errbacks' group as its child, as Celery's does.
            #expect(meta["children"]?[0]?[1]?[0]?[0]?[0] == .string(errbackID))
            #expect(try await Self.exists(redis, "celery-taskset-meta-\(groupID).s") == false)
        }
    }

    @Test func expiredHeaderReturnsARevokedPart() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            var expired = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            expired.expires = CeleryTimestamp(secondsSince1970: CeleryTimestamp.now().secondsSince1970 - 60)
            try await Self.sendChord(
                [OutgoingTask(name: "tasks.add", args: [2, 2], queue: queue), expired],
                callback: Self.callback("tasks.xsum", id: callbackID, groupID: groupID),
                groupID: groupID,
                redis: redis
            )
            let meta = try await TestRedis.result(redis, callbackID)
            #expect(meta["result"]?["exc_type"] == "ChordError")
            #expect(
                meta["result"]?["exc_message"]
                    == [.string("Dependency \(expired.id) raised TaskRevokedError('expired')")]
            )
        }
    }

    @Test func oldClientChordSizeInTheCallbackSignature() async throws {
        // Celery ≤ 5.0 set no size key; the callback signature carried `chord_size`.
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 4)) { _, redis in
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            var callback = Self.callback("tasks.xsum", id: callbackID, groupID: groupID)
            if case .object(var object) = callback {
                object["chord_size"] = 3
                callback = .object(object)
            }
            let header = (1...3).map { OutgoingTask(name: "tasks.identity", args: [.int($0)], queue: queue) }
            try await Self.sendChord(header, callback: callback, groupID: groupID, redis: redis, setSize: false)
            #expect(try await TestRedis.result(redis, callbackID)["result"] == 6)
        }
    }

    @Test func headerChainFailureReturnsItsPart() async throws {
        // chord([add.s(1, 1) | add.s(1), fail.s()], ...): the chain's last task carries the chord in its options;
        // when the chain's first task fails, that part is returned as failed, so the chord does not hang.
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 4)) { _, redis in
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            let hopID = OutgoingTask.newID()
            let callback = Self.callback("tasks.xsum", id: callbackID, groupID: groupID)
            var first = OutgoingTask(name: "tasks.fail", args: ["in chain"], queue: queue)
            first.chain = [
                [
                    "task": "tasks.add", "args": [1], "kwargs": [:],
                    "options": [
                        "task_id": .string(hopID), "group_id": .string(groupID), "group_index": 0, "chord": callback,
                    ],
                    "subtask_type": nil, "immutable": false,
                ]
            ]
            try await TestRedis.push(redis, first.list, first.envelope())
            var second = OutgoingTask(name: "tasks.add", args: [2, 2], queue: queue)
            second.groupID = groupID
            second.groupIndex = 1
            second.chord = callback
            try await redis.send(RESPCommand("SET", "celery-taskset-meta-\(groupID).s", "2", "EX", 600))
            try await TestRedis.push(redis, second.list, second.envelope())
            let hop = try await TestRedis.result(redis, hopID)
            #expect(hop["status"] == "FAILURE")
            #expect(hop["group_id"] == .string(groupID))
            let meta = try await TestRedis.result(redis, callbackID)
            #expect(meta["result"]?["exc_message"] == [.string("Dependency \(hopID) raised ValueError('in chain')")])
        }
    }

    /// Two workers return the last two parts of many chords at the same moment: each chord's callback is
    /// published exactly once, by one of them, and a redelivered copy of a part after completion sends nothing.
    @Test func concurrentLastPartsSendExactlyOneCallback() async throws {
        let queue = TestRedis.uniqueQueue()
        func worker(_ name: String) throws -> Worker {
            Worker(
                configuration: WorkerConfiguration(queues: [queue], hostname: name),
                registry: TestRedis.defaultRegistry(),
                broker: try TestRedis.client(),
                backend: try TestRedis.client(),
                logger: TestRedis.logger
            )
        }
        let first = try worker("swift@one")
        let second = try worker("swift@two")
        let redis = try TestRedis.client()
        let chords = 40
        var callbackIDs: [String: String] = [:]
        for _ in 0..<chords {
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            callbackIDs[callbackID] = groupID
            let callback = Self.callback("tasks.xsum", id: callbackID, groupID: groupID)
            try await redis.send(RESPCommand("SET", "celery-taskset-meta-\(groupID).s", "3", "EX", 600))
            func part(_ index: Int) -> (Worker.ChordMembership, JSONValue) {
                var header = OutgoingTask(name: "tasks.add", id: "\(groupID)-\(index)", queue: queue)
                header.groupID = groupID
                header.groupIndex = index
                header.chord = callback
                let message = try! TaskMessage(envelope: header.envelope())
                return (Worker.ChordMembership(message, origin: first.origin(of: message))!, .int(index * 10))
            }
            let (zero, zeroResult) = part(0)
            await first.returnChordPart(zero, state: .success, result: zeroResult, meta: nil)
            let (one, oneResult) = part(1)
            let (two, twoResult) = part(2)
            async let a: Void = first.returnChordPart(one, state: .success, result: oneResult, meta: nil)
            async let b: Void = second.returnChordPart(two, state: .success, result: twoResult, meta: nil)
            _ = await (a, b)
            // A redelivered copy of a part, after the chord completed.
            var copy = one
            copy.redelivered = true
            await second.returnChordPart(copy, state: .success, result: oneResult, meta: nil)
        }
        let published = try await redis.send(RESPCommand("LRANGE", queue, 0, -1)).array ?? []
        let callbacks = try published.map { try TaskMessage(envelope: Array(#require($0.bytes).readableBytesView)) }
        #expect(callbacks.count == chords)
        #expect(Set(callbacks.map(\.id)) == Set(callbackIDs.keys))
        for message in callbacks {
            #expect(message.taskName == "tasks.xsum")
            #expect(message.args == [[0, 10, 20]])
            #expect(message.groupID == callbackIDs[message.id])
        }
        try await redis.send(RESPCommand("DEL", queue))
    }

    @Test func malformedChordsAreAnsweredNotFatal() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // `embed.chord` that is not a signature: the task runs and stores its result as a plain task.
            var odd = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            odd.groupID = OutgoingTask.newID()
            odd.chord = "not a signature"
            try await TestRedis.push(redis, odd.list, odd.envelope())
            #expect(try await TestRedis.result(redis, odd.id)["result"] == 2)
            // A callback without a task name: the chord completes with a ChordError stored for the callback id.
            let groupID = OutgoingTask.newID()
            let callbackID = OutgoingTask.newID()
            let nameless: JSONValue = [
                "args": [], "kwargs": [:], "options": ["task_id": .string(callbackID), "group_id": .string(groupID)],
            ]
            try await Self.sendChord(
                [OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)],
                callback: nameless,
                groupID: groupID,
                redis: redis
            )
            let meta = try await TestRedis.result(redis, callbackID)
            #expect(meta["status"] == "FAILURE")
            #expect(meta["result"]?["exc_type"] == "ChordError")
            #expect(meta["result"]?["exc_message"]?[0]?.stringValue?.hasPrefix("Callback error") == true)
            // The worker carries on.
            let after = OutgoingTask(name: "tasks.add", args: [2, 2], queue: queue)
            try await TestRedis.push(redis, after.list, after.envelope())
            #expect(try await TestRedis.result(redis, after.id)["result"] == 4)
        }
    }

    /// `chain(add.s(1, 2), group(add.s(1), mul.s(2)), xsum.s())` as Celery 5.7 sends it: the next step is a chord.
    @Test func chainStepThatIsAChordPublishesItsHeaderAndSize() async throws {
        let queue = TestRedis.uniqueQueue()
        let redis = try TestRedis.client()
        let worker = Worker(
            configuration: WorkerConfiguration(queues: [queue], hostname: "swift@nested"),
            registry: TestRedis.defaultRegistry(),
            broker: redis,
            backend: redis,
            logger: TestRedis.logger
        )
        let groupID = OutgoingTask.newID()
        let bodyID = OutgoingTask.newID()
        func member(_ name: String, _ index: Int) -> JSONValue {
            [
                "task": .string(name), "args": [.int(index + 1)], "kwargs": [:],
                "options": ["task_id": .string(OutgoingTask.newID()), "group_index": .int(index)],
                "subtask_type": nil, "immutable": false,
            ]
        }
        let step: JSONValue = [
            "task": "celery.chord", "args": [],
            "kwargs": [
                "kwargs": [:],
                "header": [
                    "task": "celery.group", "args": [],
                    "kwargs": ["tasks": [member("tasks.add", 0), member("tasks.mul", 1)]],
                    "options": ["task_id": .string(groupID)], "subtask_type": "group", "immutable": false,
                ],
                "body": WorkerCanvasTests.signature("tasks.xsum", id: bodyID),
            ],
            "options": ["task_id": .string(groupID)], "subtask_type": "chord", "immutable": false,
        ]
        var first = OutgoingTask(name: "tasks.add", args: [1, 2], queue: queue)
        first.chain = [step]
        let message = try TaskMessage(envelope: first.envelope())
        let children = try await worker.publishSuccessors(of: message, result: 3)
        #expect(children == WorkerCanvasTests.children(bodyID))
        let size = try await redis.send(RESPCommand("GET", "celery-taskset-meta-\(groupID).s"))
        #expect(size.string == "2")
        let pushed = try await redis.send(RESPCommand("LRANGE", queue, 0, -1)).array ?? []
        let headers = try pushed.reversed().map {
            try TaskMessage(envelope: Array(#require($0.bytes).readableBytesView))
        }
        #expect(headers.map(\.taskName) == ["tasks.add", "tasks.mul"])
        #expect(headers.map(\.args) == [[3, 1], [3, 2]])
        #expect(headers.map(\.groupID) == [groupID, groupID])
        #expect(headers.map { $0.headers["group_index"] } == [0, 1])
        #expect(headers.map { $0.embed["chord"]?["options"]?["task_id"] } == [.string(bodyID), .string(bodyID)])
        #expect(headers.map { $0.embed["chord"]?["options"]?["group_id"] } == [.string(groupID), .string(groupID)])
        try await redis.send(RESPCommand("DEL", queue, "celery-taskset-meta-\(groupID).s"))
    }

    @Test func failureFailsTheRestOfTheChain() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let second = OutgoingTask.newID()
            let third = OutgoingTask.newID()
            var first = OutgoingTask(name: "tasks.fail", args: ["early"], queue: queue)
            first.chain = [
                WorkerCanvasTests.signature("tasks.mul", [10], id: third),
                WorkerCanvasTests.signature("tasks.add", [3], id: second),
            ]
            try await TestRedis.push(redis, first.list, first.envelope())
            for id in [second, third] {
                let meta = try await TestRedis.result(redis, id)
                #expect(meta["status"] == "FAILURE")
                #expect(meta["result"]?["exc_message"] == ["early"])
            }
            #expect(try await redis.send(RESPCommand("LLEN", queue)).int == 0)
        }
    }

    @Test func severalCallbacksAreOneGroup() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            let one = OutgoingTask.newID()
            let two = OutgoingTask.newID()
            var parent = OutgoingTask(name: "tasks.add", args: [1, 2], queue: queue)
            parent.callbacks = [
                WorkerCanvasTests.signature("tasks.identity", id: one),
                WorkerCanvasTests.signature("tasks.identity", id: two),
            ]
            try await TestRedis.push(redis, parent.list, parent.envelope())
            let first = try await TestRedis.result(redis, one)
            let second = try await TestRedis.result(redis, two)
            #expect(first["result"] == 3)
            #expect(second["result"] == 3)
            let groupID = try #require(first["group_id"]?.stringValue)
            #expect(second["group_id"] == .string(groupID))
            let meta = try await TestRedis.result(redis, parent.id)
            #expect(
                meta["children"] == [
                    [[.string(groupID), nil], [[[.string(one), nil], nil], [[.string(two), nil], nil]]]
                ]
            )
        }
    }
}

/// How chord parts become the callback's argument (pure logic).
struct ChordJoinTests {
    @Test func resultsInOrderOrTheFirstFailure() throws {
        let ok: [JSONValue] = [[1, "a", "SUCCESS", 2], [1, "b", "SUCCESS", ["x": 1]]]
        #expect(try ChordJoin.results(ok).get() == [2, ["x": 1]])
        let failed: [JSONValue] = [
            [1, "a", "SUCCESS", 2],
            [1, "b", "FAILURE", ["exc_type": "KeyError", "exc_message": ["k", 2, nil], "exc_module": "builtins"]],
            [1, "c", "REVOKED", ["exc_type": "TaskRevokedError", "exc_message": ["revoked"]]],
        ]
        guard case .failure(let error) = ChordJoin.results(failed) else {
            Issue.record("a failed part must fail the chord")
            return
        }
        #expect(error.type == "ChordError")
        #expect(error.module == "celery.exceptions")
        #expect(error.arguments == ["Dependency b raised KeyError('k', 2, None)"])
    }

    @Test(arguments: [
        JSONValue.string("not a part"), [1, "a"], [1, 2, "SUCCESS", 1], nil,
    ])
    func unreadablePartIsAJoinError(_ part: JSONValue) {
        guard case .failure(let error) = ChordJoin.results([part]) else {
            Issue.record("an unreadable part must fail the chord")
            return
        }
        #expect(error.arguments.first?.stringValue?.hasPrefix("Join error:") == true)
    }

    @Test func reprQuotesAsPython() {
        let nested: JSONValue = ["exc_type": "ChordError", "exc_message": ["raised ValueError('no')"]]
        #expect(ChordJoin.exceptionRepr(nested) == #"ChordError("raised ValueError('no')")"#)
        let both: JSONValue = ["exc_type": "E", "exc_message": [.string("a'b\"c"), 1.5, true]]
        #expect(ChordJoin.exceptionRepr(both) == #"E('a\'b"c', 1.5, True)"#)
        #expect(ChordJoin.exceptionRepr(["exc_type": "celery.exceptions.Retry", "exc_message": nil]) == "Retry()")
    }

    @Test func nestedGroupsAreDetected() {
        let flat: JSONValue = ["result": [["g", nil], [[["a", nil], nil], [["b", nil], nil]]]]
        let nested: JSONValue = [
            "result": [["g", nil], [[["a", nil], nil], [["g2", nil], [[["c", nil], nil]]]]]
        ]
        #expect(!ChordJoin.hasNestedGroups(flat))
        #expect(ChordJoin.hasNestedGroups(nested))
    }
}
