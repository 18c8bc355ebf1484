import CeleryClient
import Foundation
import JSON
import RESP
import Redis
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// Canvas inside canvas as Celery 5.7 applies it (docs/protocol.md §3.4–3.5): a group's own options passed to its
/// members, a chord as a group member, a chord carrying the rest of its chain, a header holding a group, a failed
/// chord's group body, and a canvas a handler sends itself. In-process workers against the real redis-server.
@Suite(.enabled(if: TestRedis.available, "needs SWIFT_CELERY_TEST_REDIS_URL (run through scripts/test.sh)"))
struct WorkerNestedCanvasTests {
    static func signature(_ name: String, _ args: [JSONValue] = [], id: String? = nil) -> JSONValue {
        WorkerCanvasTests.signature(name, args, id: id)
    }

    @Test func aGroupsOwnLinkErrorGoesToEachOfItsTasks() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // add(1, 1) | group(fail.si("x"), identity()).set(link_error=identity()): the failing task calls the
            // group's errback (Celery's group.apply_async gives the group's options to each task).
            let failingID = OutgoingTask.newID()
            let errbackID = OutgoingTask.newID()
            let group = Canvas.group(
                [
                    WorkerCanvasTests.signature("tasks.fail", ["x"], id: failingID, immutable: true),
                    Self.signature("tasks.identity"),
                ],
                options: ["link_error": [Self.signature("tasks.identity", id: errbackID)]]
            )
            var first = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            first.chain = [group]
            try await WorkerCanvasTests.send(first, redis)
            #expect(try await TestRedis.result(redis, failingID)["status"] == "FAILURE")
            #expect(try await TestRedis.result(redis, errbackID)["result"] == .string(failingID))
        }
    }

    @Test func aChordInAGroupGivesItsResultThroughItsBody() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // add(1, 1) | group(chord([add(10), add(20)], xsum()), add(100)): 2 goes to the chord's header.
            let bodyID = OutgoingTask.newID()
            let memberID = OutgoingTask.newID()
            let chord = Canvas.chord(
                [Self.signature("tasks.add", [10]), Self.signature("tasks.add", [20])],
                body: Self.signature("tasks.xsum", id: bodyID)
            )
            var first = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            first.chain = [Canvas.group([chord, Self.signature("tasks.add", [100], id: memberID)])]
            try await WorkerCanvasTests.send(first, redis)
            #expect(try await TestRedis.result(redis, bodyID)["result"] == 34)
            #expect(try await TestRedis.result(redis, memberID)["result"] == 102)
            // The group's members in the first task's children: the chord's body, then the task.
            let members = try await TestRedis.result(redis, first.id)["children"]?[0]?[1]
            #expect(members?[0]?[0]?[0] == .string(bodyID))
            #expect(members?[1]?[0]?[0] == .string(memberID))
        }
    }

    @Test func aChordInAChordHeaderReturnsItsPartThroughItsBody() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // add(1, 1) | chord([chord([add(1), add(2)], xsum()), add(10)], xsum()): [3 + 4, 12] → 19.
            let bodyID = OutgoingTask.newID()
            let inner = Canvas.chord(
                [Self.signature("tasks.add", [1]), Self.signature("tasks.add", [2])],
                body: Self.signature("tasks.xsum")
            )
            let outer = Canvas.chord(
                [inner, Self.signature("tasks.add", [10])],
                body: Self.signature("tasks.xsum", id: bodyID)
            )
            var first = OutgoingTask(name: "tasks.add", args: [1, 1], queue: queue)
            first.chain = [outer]
            try await WorkerCanvasTests.send(first, redis)
            #expect(try await TestRedis.result(redis, bodyID)["result"] == 19)
        }
    }

    @Test func aChordBodyThatIsAChordRunsTheRestOfTheChainAfterIt() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // chain(add.si(1, 0), group(add(1), add(2)), group(xsum(), xsum()), xsum(), add(1)) as Celery's client
            // sends it: the rest after the first task is [add(1), chord(group1, chord(group2, xsum))].
            let lastID = OutgoingTask.newID()
            let inner = Canvas.chord(
                [Self.signature("tasks.xsum"), Self.signature("tasks.xsum")],
                body: Self.signature("tasks.xsum")
            )
            let outer = Canvas.chord([Self.signature("tasks.add", [1]), Self.signature("tasks.add", [2])], body: inner)
            var first = OutgoingTask(name: "tasks.add", args: [1, 0], queue: queue)
            first.chain = [Self.signature("tasks.add", [1], id: lastID), outer]
            try await WorkerCanvasTests.send(first, redis)
            // 1 → [2, 3] → [5, 5] → 10 → 11
            #expect(try await TestRedis.result(redis, lastID)["result"] == 11)
        }
    }

    @Test func aHeaderHoldingAGroupIsJoinedThroughTheGroupTheClientSaved() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // chord([identity.s(42) | group(identity.s(), identity.s())], identity.s()) as Celery's client sends
            // it: the group's tasks are the chord's two parts, and the saved group gives the result its shape.
            let groupID = OutgoingTask.newID()
            let innerID = OutgoingTask.newID()
            let bodyID = OutgoingTask.newID()
            let memberIDs = [OutgoingTask.newID(), OutgoingTask.newID()]
            let body = WorkerChordTests.callback("tasks.identity", id: bodyID, groupID: groupID)
            let membership: JSONObject = ["group_id": .string(groupID), "chord": body]
            let members = memberIDs.enumerated().map { index, id in
                Canvas.setting(
                    membership.merging(["group_index": .int(index)]) { $1 },
                    on: Self.signature("tasks.identity", id: id)
                )
            }
            let group = Canvas.group(
                members,
                options: membership.merging(["task_id": .string(innerID), "group_index": 0]) { $1 }
            )
            var first = OutgoingTask(name: "tasks.identity", args: [42], queue: queue)
            first.chain = [group]
            let saved: JSONValue = [
                "result": [
                    [.string(groupID), nil],
                    [
                        [
                            [.string(innerID), [[.string(first.id), nil], nil]],
                            .array(memberIDs.map { [[.string($0), nil], nil] }),
                        ]
                    ],
                ]
            ]
            try await redis.send(RESPCommand("SET", "celery-taskset-meta-\(groupID)", saved.serializedString()))
            try await redis.send(RESPCommand("SET", "celery-taskset-meta-\(groupID).s", "2"))
            try await WorkerCanvasTests.send(first, redis)
            #expect(try await TestRedis.result(redis, bodyID)["result"] == [[42, 42]])
        }
    }

    @Test func aFailedChordFailsEachResultOfItsGroupBodyWithTheHeadersError() async throws {
        let queue = TestRedis.uniqueQueue()
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2)) { _, redis in
            // chord([fail("hdr")], group(chord([add(2, 2)], identity().on_error(identity())), xsum())): the inner
            // chord's body fails and calls its errback, the task fails, and so does the group.
            let groupID = OutgoingTask.newID()
            let bodyGroupID = OutgoingTask.newID()
            let innerBodyID = OutgoingTask.newID()
            let errbackID = OutgoingTask.newID()
            let memberID = OutgoingTask.newID()
            let inner = Canvas.chord(
                [Self.signature("tasks.add", [2, 2])],
                body: Canvas.setting(
                    ["link_error": [Self.signature("tasks.identity", id: errbackID)]],
                    on: Self.signature("tasks.identity", id: innerBodyID)
                )
            )
            let body = Canvas.group(
                [inner, Self.signature("tasks.xsum", id: memberID)],
                options: ["task_id": .string(bodyGroupID), "group_id": .string(groupID)]
            )
            try await WorkerChordTests.sendChord(
                [OutgoingTask(name: "tasks.fail", args: ["hdr"], queue: queue)],
                callback: body,
                groupID: groupID,
                redis: redis
            )
            let failed = try await TestRedis.result(redis, innerBodyID)
            #expect(failed["status"] == "FAILURE")
            // The header's own error, as Celery's _handle_group_chord_error stores (the ChordError's cause).
            #expect(failed["result"]?["exc_type"] == "ValueError")
            #expect(try await TestRedis.result(redis, errbackID)["result"] == .string(innerBodyID))
            #expect(try await TestRedis.result(redis, memberID)["status"] == "FAILURE")
            #expect(try await TestRedis.result(redis, bodyGroupID)["status"] == "FAILURE")
        }
    }

    @Test func aHandlerSendsACanvasAndReturnsItsResultTuple() async throws {
        let queue = TestRedis.uniqueQueue()
        var registry = TestRedis.defaultRegistry()
        registry.register("tests.send_chain") { context, _ in
            // add(1, 1) | add(2) | group(add(3), add(4)) | xsum(): Celery's build_chain_inside_task.
            let canvas = Canvas.chain([
                Self.signature("tasks.add", [1, 1]), Self.signature("tasks.add", [2]),
                Canvas.group([Self.signature("tasks.add", [3]), Self.signature("tasks.add", [4])]),
                Self.signature("tasks.xsum"),
            ])
            return try await context.send(canvas).resultTuple
        }
        try await TestRedis.withWorker(WorkerConfiguration(queues: [queue], concurrency: 2), registry: registry) {
            _,
            redis in
            let parent = OutgoingTask(name: "tests.send_chain", queue: queue)
            try await WorkerCanvasTests.send(parent, redis)
            let meta = try await TestRedis.result(redis, parent.id)
            let tuple = try #require(meta["result"])
            // [[xsum, [[group, [[add(2), [[add(1, 1), null], null]], null]], [add(3), add(4)]]], null]
            let lastID = try #require(tuple[0]?[0]?.stringValue)
            let group = try #require(tuple[0]?[1])
            #expect(group[1]?.arrayValue?.count == 2)
            let firstID = try #require(group[0]?[1]?[0]?[1]?[0]?[0]?.stringValue)
            // The chain's first task is the task's child, as Celery's chain.apply_async inside a task adds it.
            #expect(meta["children"] == [[[.string(firstID), nil], nil]])
            let last = try await TestRedis.result(redis, lastID)
            #expect(last["result"] == 15)  // 2 → 4 → [7, 8] → 15
            let firstMeta = try await TestRedis.result(redis, firstID)
            #expect(firstMeta["result"] == 2)
            #expect(firstMeta["parent_id"] == .string(parent.id))
        }
    }

    @Test func aSavedHeaderIsJoinedWhenEveryResultIsReady() {
        let saved: JSONValue = [
            "result": [
                ["g", nil], [[["a", nil], nil], [["g2", nil], [[["b", nil], nil], [["c", nil], nil]]]],
            ]
        ]
        #expect(AsyncResult.taskIDs(saved["result"] ?? nil) == ["a", "b", "c"])
        let done: [String: JSONValue] = [
            "a": ["status": "SUCCESS", "result": 1], "b": ["status": "SUCCESS", "result": 2],
            "c": ["status": "SUCCESS", "result": 3],
        ]
        guard case .success(let joined)? = ChordJoin.results(ofSaved: saved, metas: done) else {
            Issue.record("a ready header must join")
            return
        }
        #expect(joined == [1, [2, 3]])
        var pending = done
        pending["c"] = ["status": "STARTED", "result": nil]
        #expect(ChordJoin.results(ofSaved: saved, metas: pending) == nil)
        var failed = done
        failed["b"] = ["status": "FAILURE", "result": ["exc_type": "ValueError", "exc_message": ["no"]]]
        guard case .failure(let error)? = ChordJoin.results(ofSaved: saved, metas: failed) else {
            Issue.record("a failed member must fail the join")
            return
        }
        #expect(error.arguments == ["Join error: ValueError('no')"])
    }

    @Test func aSentChordGivesItsBodyWithItsHeaderAsParentAndTheHeaderAsChild() throws {
        // What a Python task sending chord([add(1, 1), add(2, 2)], xsum()) stores (checked against Celery 5.7's
        // worker): the result is the body's tuple with the header group as parent; the child is the header group.
        let chord = Canvas.chord(
            [Self.signature("tasks.add", [1, 1], id: "a"), Self.signature("tasks.add", [2, 2], id: "b")],
            body: Self.signature("tasks.xsum", id: "body")
        )
        let frozen = Worker.freeze(chord)
        let groupID = try #require(frozen["kwargs"]?["header"]?["options"]?["task_id"]?.stringValue)
        let header: JSONValue = [[.string(groupID), nil], [[["a", nil], nil], [["b", nil], nil]]]
        #expect(Worker.resultTuple(of: frozen) == [["body", header], nil])
        #expect(Worker.sentTuple(of: frozen) == header)
        let group = Worker.freeze(Canvas.group([Self.signature("tasks.add", [1, 1], id: "a")]))
        #expect(Worker.sentTuple(of: group) == Worker.resultTuple(of: group))
    }

    @Test func resultErrbacksFollowChordsToTheirBodiesAndCollectGroups() {
        let errback = Self.signature("tasks.identity", ["e"])
        let other = Self.signature("tasks.identity", ["o"])
        let chord = Canvas.chord(
            [Self.signature("tasks.add")],
            body: Canvas.setting(["link_error": [other]], on: Self.signature("tasks.xsum", id: "body")),
            options: ["link_error": [errback]]
        )
        let (id, errbacks) = Worker.resultErrbacks(of: chord)
        #expect(id == "body")
        #expect(errbacks == [errback, other])
        let group = Canvas.group(
            [Canvas.setting(["link_error": [other]], on: Self.signature("tasks.add"))],
            options: ["task_id": "g", "link_error": [errback]]
        )
        let grouped = Worker.resultErrbacks(of: group)
        #expect(grouped.id == "g")
        #expect(grouped.errbacks == [errback, other])
    }
}
