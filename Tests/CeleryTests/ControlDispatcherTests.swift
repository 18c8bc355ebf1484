import CeleryClient
import ExtrasBase64
import JSON
import Synchronization
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The pidbox command set against an in-memory worker: routing, arguments, replies and errors as Celery 5.7's
/// worker gives them (captured from a Python worker).
struct ControlDispatcherTests {
    final class FakeWorker: ControlTarget {
        struct State {
            var revoked: [String] = []
            var running: Set<String> = []
            var rates: [String: String] = [:]
            var timeLimits: [String: (Double?, Double?)] = [:]
            var queues = ["celery"]
            var shutdowns = 0
            var heartbeats = 0
            var events = false
            var clock = 10
            var revokedStamps: [(JSONObject, Bool)] = []
        }
        let state = Mutex(State())
        let tasks = ["celery.map", "tasks.add", "tasks.sleep"]
        let withHooks: Bool

        init(withHooks: Bool = true) { self.withHooks = withHooks }

        var hostname: String { "w1@host" }
        var hooks: ControlHooks {
            guard withHooks else { return ControlHooks() }
            return ControlHooks(
                enableEvents: {
                    self.state.withLock { s in
                        defer { s.events = true }
                        return !s.events
                    }
                },
                disableEvents: {
                    self.state.withLock { s in
                        defer { s.events = false }
                        return s.events
                    }
                },
                heartbeat: { self.state.withLock { $0.heartbeats += 1 } }
            )
        }
        func taskNames() -> [String] { tasks }
        func taskAttribute(_ field: String, of taskName: String) -> String? {
            switch field {
            case "name": taskName
            case "ignore_result": "False"
            case "rate_limit": state.withLock { $0.rates[taskName] }
            default: nil
            }
        }
        func report() -> String { "\nsoftware -> celery:5.7.0 (swift-celery)" }
        func revokeStamps(_ headers: JSONObject, terminate: Bool) -> [(header: String, stamps: [JSONValue])] {
            state.withLock { $0.revokedStamps.append((headers, terminate)) }
            guard terminate, let stamps = headers["running"] else { return [] }
            return [("running", RevokedStamps.list(stamps))]
        }
        func activeRequests() -> [JSONValue] { state.withLock { $0.running.sorted().map { ["id": .string($0)] } } }
        func reservedRequests() -> [JSONValue] { [] }
        func scheduledRequests() -> [JSONValue] { [] }
        func queryTasks(_ ids: [String]) -> JSONObject {
            var found: JSONObject = [:]
            for id in ids where state.withLock({ $0.running.contains(id) }) {
                found[id] = ["active", ["id": .string(id)]]
            }
            return found
        }
        func stats() -> JSONValue { ["total": [:]] }
        func configuration() -> JSONValue { ["worker_concurrency": 8] }
        func activeQueues() -> [JSONValue] { state.withLock { $0.queues.map { ["name": .string($0)] } } }
        func revokedIDs() -> [String] { state.withLock { $0.revoked } }
        func revoke(_ ids: [String]) async { state.withLock { $0.revoked += ids.filter { !$0.isEmpty } } }
        func terminate(_ ids: [String]) -> [String] {
            state.withLock { s in ids.filter { s.running.remove($0) != nil } }
        }
        func setRateLimit(_ limit: TaskRateLimit, for taskName: String) -> Bool {
            guard tasks.contains(taskName) else { return false }
            state.withLock { $0.rates[taskName] = limit.isLimited ? limit.text : nil }
            return true
        }
        func setTimeLimits(soft: Double?, hard: Double?, for taskName: String) -> Bool {
            guard tasks.contains(taskName) else { return false }
            state.withLock { $0.timeLimits[taskName] = (soft, hard) }
            return true
        }
        func addConsumer(_ queue: String) async { state.withLock { $0.queues.append(queue) } }
        func cancelConsumer(_ queue: String) async { state.withLock { $0.queues.removeAll { $0 == queue } } }
        func mergeRevoked(_ ids: [String]) { state.withLock { $0.revoked += ids } }
        func forwardClock() -> Int {
            state.withLock {
                $0.clock += 1
                return $0.clock
            }
        }
        func currentClock() -> Int { state.withLock { $0.clock } }
        func shutdown() { state.withLock { $0.shutdowns += 1 } }
    }

    func run(
        _ worker: FakeWorker,
        _ method: String,
        _ arguments: JSONObject = [:]
    ) async -> ControlDispatcher.Outcome {
        await ControlDispatcher(target: worker).dispatch(ControlRequest(method: method, arguments: arguments))
    }

    @Test func inspectCommands() async {
        let worker = FakeWorker()
        worker.state.withLock { $0.running = ["t1"] }
        #expect(await run(worker, "ping") == .reply(["ok": "pong"]))
        #expect(await run(worker, "registered") == .reply(["tasks.add", "tasks.sleep"]))
        #expect(await run(worker, "active") == .reply([["id": "t1"]]))
        #expect(await run(worker, "dump_active") == .reply([["id": "t1"]]))
        #expect(await run(worker, "query_task", ["ids": ["t1", "t2"]]) == .reply(["t1": ["active", ["id": "t1"]]]))
        #expect(await run(worker, "query_task", ["ids": "t1"]) == .reply(["t1": ["active", ["id": "t1"]]]))
        #expect(await run(worker, "revoked") == .reply([]))
        #expect(await run(worker, "clock") == .reply(["clock": 10]))
        #expect(await run(worker, "conf") == .reply(["worker_concurrency": 8]))
    }

    /// `registered` as Celery 5.7's worker answers it (captured from one): built-ins hidden unless asked, and
    /// `taskinfoitems` as ` [field=value ...]` in the order asked, fields Python holds as None left out.
    @Test func registeredWithTaskInfoItemsAndBuiltins() async {
        let worker = FakeWorker()
        worker.state.withLock { $0.rates["tasks.add"] = "10/s" }
        #expect(await run(worker, "registered") == .reply(["tasks.add [rate_limit=10/s]", "tasks.sleep"]))
        #expect(
            await run(worker, "registered", ["taskinfoitems": ["name"]])
                == .reply(["tasks.add [name=tasks.add]", "tasks.sleep [name=tasks.sleep]"])
        )
        #expect(
            await run(worker, "registered", ["taskinfoitems": ["rate_limit", "_private", "nope", "ignore_result"]])
                == .reply(["tasks.add [rate_limit=10/s ignore_result=False]", "tasks.sleep [ignore_result=False]"])
        )
        #expect(
            await run(worker, "registered", ["taskinfoitems": [], "builtins": true])
                == .reply(["celery.map", "tasks.add [rate_limit=10/s]", "tasks.sleep"])
        )
    }

    @Test func reportIsCeleryBugReport() async {
        guard case .reply(let body) = await run(FakeWorker(), "report") else {
            Issue.record("no reply")
            return
        }
        #expect(body["ok"]?.stringValue?.contains("software -> celery:") == true)
    }

    /// `revoke_by_stamped_headers` replies as Celery 5.7 (captured), for a dict, a list of `key=value` and
    /// `terminate`.
    @Test func revokeByStampedHeaders() async {
        let worker = FakeWorker()
        #expect(
            await run(worker, "revoke_by_stamped_headers", ["headers": ["myheader": ["myvalue"]], "terminate": false])
                == .reply(["ok": "headers {'myheader': ['myvalue']} flagged as revoked, but not terminated"])
        )
        #expect(
            await run(worker, "revoke_by_stamped_headers", ["headers": ["h2": "v", "h3": 5]])
                == .reply(["ok": "headers {'h2': 'v', 'h3': 5} flagged as revoked, but not terminated"])
        )
        #expect(
            await run(worker, "revoke_by_stamped_headers", ["headers": ["a=b", "c=d"]])
                == .reply(["ok": "headers {'a': 'b', 'c': 'd'} flagged as revoked, but not terminated"])
        )
        #expect(
            await run(worker, "revoke_by_stamped_headers", ["headers": ["h": ["x"]], "terminate": true])
                == .reply(["ok": "headers {'h': ['x']} were not terminated"])
        )
        #expect(
            await run(worker, "revoke_by_stamped_headers", ["headers": ["running": ["s1"]], "terminate": true])
                == .reply(["ok": "headers defaultdict(<class 'set'>, {'running': {'s1'}}) revoked"])
        )
        #expect(
            await run(worker, "revoke_by_stamped_headers")
                == .reply([
                    "error":
                        #"TypeError("revoke_by_stamped_headers() missing 1 required positional argument: 'headers'")"#
                ])
        )
        let recorded = worker.state.withLock { $0.revokedStamps.map(\.0) }
        #expect(recorded.count == 5)
        #expect(recorded[2] == ["a": "b", "c": "d"])
    }

    @Test func unknownCommandIsKeyError() async {
        #expect(await run(FakeWorker(), "nosuchcmd") == .reply(["error": "KeyError('nosuchcmd')"]))
    }

    @Test func revokeFlagsAndTerminates() async {
        let worker = FakeWorker()
        worker.state.withLock { $0.running = ["run-1"] }
        #expect(
            await run(worker, "revoke", ["task_id": "abc-123"])
                == .reply(["ok": "tasks {'abc-123'} flagged as revoked"])
        )
        #expect(
            await run(worker, "revoke", ["task_id": ["a", "b"]])
                == .reply(["ok": "tasks {'a', 'b'} flagged as revoked"])
        )
        #expect(
            await run(worker, "revoke", ["task_id": "nope", "terminate": true, "signal": "SIGTERM"])
                == .reply(["ok": "terminate: tasks unknown"])
        )
        #expect(
            await run(worker, "revoke", ["task_id": "run-1", "terminate": true]) == .reply(["ok": "terminate: run-1"])
        )
        #expect(worker.state.withLock { $0.running.isEmpty })
        #expect(worker.revokedIDs() == ["abc-123", "a", "b", "nope", "run-1"])
        #expect(
            await run(worker, "revoke")
                == .reply(["error": #"TypeError("revoke() missing 1 required positional argument: 'task_id'")"#])
        )
    }

    @Test func rateLimitValidatesAsCelery() async {
        let worker = FakeWorker()
        #expect(
            await run(worker, "rate_limit", ["task_name": "tasks.add", "rate_limit": "10/m"])
                == .reply(["ok": "new rate limit set successfully"])
        )
        #expect(await run(worker, "registered") == .reply(["tasks.add [rate_limit=10/m]", "tasks.sleep"]))
        #expect(
            await run(worker, "rate_limit", ["task_name": "tasks.add", "rate_limit": "abc"])
                == .reply([
                    "error": #"Invalid rate limit string: ValueError("could not convert string to float: 'abc'")"#
                ])
        )
        #expect(
            await run(worker, "rate_limit", ["task_name": "nope", "rate_limit": "1/s"])
                == .reply(["error": "unknown task"])
        )
        #expect(
            await run(worker, "rate_limit", ["task_name": "tasks.add", "rate_limit": 0])
                == .reply(["ok": "rate limit disabled successfully"])
        )
        #expect(await run(worker, "registered") == .reply(["tasks.add", "tasks.sleep"]))
        #expect(
            await run(worker, "rate_limit", ["task_name": "tasks.add", "rate_limit": "0"])
                == .reply(["ok": "new rate limit set successfully"])
        )
        #expect(
            await run(worker, "rate_limit", ["task_name": "tasks.add", "rate_limit": nil])
                == .reply(["ok": "rate limit disabled successfully"])
        )
        #expect(
            await run(worker, "rate_limit", ["task_name": "tasks.add"])
                == .reply(["error": #"TypeError("rate_limit() missing 1 required positional argument: 'rate_limit'")"#])
        )
    }

    @Test func timeLimits() async {
        let worker = FakeWorker()
        #expect(
            await run(worker, "time_limit", ["task_name": "tasks.sleep", "soft": 10, "hard": 20.5])
                == .reply(["ok": "time limits set successfully"])
        )
        let limits = worker.state.withLock { $0.timeLimits["tasks.sleep"] }
        #expect(limits?.0 == 10 && limits?.1 == 20.5)
        #expect(await run(worker, "time_limit", ["task_name": "nope", "soft": 1]) == .reply(["error": "unknown task"]))
    }

    @Test func shutdownHasNoReply() async {
        let worker = FakeWorker()
        #expect(await run(worker, "shutdown") == .noReply)
        #expect(worker.state.withLock { $0.shutdowns } == 1)
    }

    @Test func eventCommandsGoThroughTheHooks() async {
        let worker = FakeWorker()
        #expect(await run(worker, "enable_events") == .reply(["ok": "task events enabled"]))
        #expect(await run(worker, "enable_events") == .reply(["ok": "task events already enabled"]))
        #expect(await run(worker, "disable_events") == .reply(["ok": "task events disabled"]))
        #expect(await run(worker, "disable_events") == .reply(["ok": "task events already disabled"]))
        #expect(await run(worker, "heartbeat") == .reply(nil))
        #expect(worker.state.withLock { $0.heartbeats } == 1)

        let bare = FakeWorker(withHooks: false)
        #expect(await run(bare, "enable_events") == .reply(["error": "event dispatcher unavailable"]))
        #expect(await run(bare, "disable_events") == .reply(["error": "event dispatcher unavailable"]))
        #expect(await run(bare, "heartbeat") == .reply(nil))
    }

    @Test func consumers() async {
        let worker = FakeWorker()
        #expect(await run(worker, "add_consumer", ["queue": "qx"]) == .reply(["ok": "add consumer qx"]))
        #expect(await run(worker, "active_queues") == .reply([["name": "celery"], ["name": "qx"]]))
        #expect(await run(worker, "cancel_consumer", ["queue": "qx"]) == .reply(["ok": "no longer consuming from qx"]))
        #expect(await run(worker, "active_queues") == .reply([["name": "celery"]]))
        #expect(
            await run(worker, "add_consumer")
                == .reply(["error": #"TypeError("add_consumer() missing 1 required positional argument: 'queue'")"#])
        )
    }

    @Test func helloMergesRevokedAndAnswersOthersOnly() async {
        let worker = FakeWorker()
        #expect(
            await run(worker, "hello", ["from_node": "other@host", "revoked": ["r1"]])
                == .reply(["revoked": ["r1"], "clock": 11])
        )
        #expect(await run(worker, "hello", ["from_node": "w1@host"]) == .reply(nil))
    }

    @Test func destinationAndPatternFilters() {
        var request = ControlRequest(method: "ping")
        #expect(request.isAddressed(to: "w1@host"))
        request.destination = ["w2@host"]
        #expect(!request.isAddressed(to: "w1@host"))
        request.destination = ["w2@host", "w1@host"]
        #expect(request.isAddressed(to: "w1@host"))
        request.destination = []
        request.pattern = "w*@h?st"
        request.matcher = "glob"
        #expect(request.isAddressed(to: "w1@host"))
        #expect(!request.isAddressed(to: "x1@host"))
        request.pattern = "w[0-9]@*"
        #expect(request.isAddressed(to: "w1@host"))
        request.pattern = "w[!0-9]@*"
        #expect(!request.isAddressed(to: "w1@host"))
        request.pattern = #"w\d@"#
        request.matcher = "pcre"
        #expect(request.isAddressed(to: "w1@host"))
        request.pattern = #"x\d"#
        #expect(!request.isAddressed(to: "w1@host"))
        request.pattern = "(unclosed"
        #expect(!request.isAddressed(to: "w1@host"))
    }

    @Test func decodesCeleryRequestEnvelope() throws {
        // As `celery inspect ping -d w1@vm` publishes it (captured).
        let body: JSONValue = [
            "method": "ping", "arguments": [:], "destination": ["w1@vm"], "pattern": nil, "matcher": nil,
            "ticket": "16737cbf", "reply_to": ["exchange": "reply.celery.pidbox", "routing_key": "1975157c"],
        ]
        let envelope: JSONValue = [
            "body": .string(Base64.encodeToString(bytes: body.serialized())),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": ["clock": 7, "expires": 1795316069.5],
            "properties": [
                "delivery_mode": 2, "delivery_info": ["exchange": "celery.pidbox", "routing_key": ""],
                "priority": 0, "body_encoding": "base64", "delivery_tag": "t1",
            ],
        ]
        let request = try ControlRequest(envelope: envelope.serialized())
        #expect(request.method == "ping")
        #expect(request.destination == ["w1@vm"])
        #expect(request.ticket == "16737cbf")
        #expect(request.replyTo == .init(exchange: "reply.celery.pidbox", routingKey: "1975157c"))
        #expect(request.clock == 7)
        #expect(request.isAddressed(to: "w1@vm"))
        #expect(!request.isAddressed(to: "w2@vm"))
    }

    @Test(arguments: [
        #"not json"#, #"[1, 2]"#, #"{"body": 5}"#, #"{"body": "!!", "properties": {"body_encoding": "base64"}}"#,
        #"{"body": "[1]"}"#, #"{"body": "{\"arguments\": {}}"}"#,
        #"{"body": "{\"method\": \"ping\", \"arguments\": 3}"}"#,
        #"{"body": "{}", "content-type": "application/x-python-serialize"}"#,
    ])
    func malformedRequestsAreRefusedWithAReason(text: String) {
        #expect(throws: ControlRequest.DecodeError.self) { try ControlRequest(envelope: Array(text.utf8)) }
    }

    @Test func pythonRepr() {
        #expect(PythonText.repr("abc") == "'abc'")
        #expect(PythonText.repr("it's") == #""it's""#)
        #expect(PythonText.repr(#"a'b"c"#) == #"'a\'b"c'"#)
    }
}
