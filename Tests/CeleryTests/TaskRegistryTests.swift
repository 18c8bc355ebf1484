import CeleryClient
import JSON
import Logging
import Redis
import Tasks
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

@Suite struct TaskRegistryTests {
    static let registry: TaskRegistry = {
        var registry = TaskRegistry()
        TaskCatalog.register(in: &registry)
        registry.register("t.greet", parameters: ["name", "greeting"]) { (_, name: String, greeting: String?) in
            "\(greeting ?? "hello") \(name)"
        }
        registry.register("t.typed", parameters: ["n", "xs", "m"]) { (_, n: Int, xs: [Double], m: [String: Bool]) in
            Double(n) + xs.reduce(0, +) + Double(m.count)
        }
        return registry
    }()

    static let context = TaskContext(
        id: "id",
        name: "t",
        retries: 0,
        hostname: "swift@test",
        deliveryInfo: .init(exchange: "", routingKey: "celery", priority: 0, redelivered: false),
        headers: [:],
        logger: Logger(label: "test"),
        redis: RedisClient(configuration: RedisConfiguration(), logger: Logger(label: "test"))
    )

    func call(_ name: String, _ args: [JSONValue], _ kwargs: JSONObject = [:]) async throws -> JSONValue {
        let task = try #require(Self.registry[name])
        return try await task.run(Self.context, TaskArguments(args: args, kwargs: kwargs))
    }

    @Test func aRetryWithOnlyArgsOrOnlyKwargsKeepsWhatDoesNotClash() {
        let parameters = ["foo", "bar", "label"]
        // retry(args=(2, 3)) after foo=1, bar=2, label="kept" by keyword: foo and bar now come by position.
        var retry = TaskRetry(args: [2, 3])
        var next = TaskMessage.retryArguments(
            retry,
            given: ([], ["foo": 1, "bar": 2, "label": "kept"]),
            parameters: parameters
        )
        #expect(next.args == [2, 3])
        #expect(next.kwargs == ["label": "kept"])
        // retry(kwargs={"foo": 2}) after (1, 2) by position: foo's positional value is replaced.
        retry = TaskRetry(kwargs: ["foo": 2])
        next = TaskMessage.retryArguments(retry, given: ([1, 2], [:]), parameters: parameters)
        #expect(next.args == [2, 2])
        #expect(next.kwargs == [:])
        // Both given, or a handler without parameter names: taken as they are.
        retry = TaskRetry(args: [5], kwargs: ["bar": 6])
        next = TaskMessage.retryArguments(retry, given: ([1, 2], ["label": "x"]), parameters: parameters)
        #expect(next.args == [5])
        #expect(next.kwargs == ["bar": 6])
        retry = TaskRetry(kwargs: ["foo": 2])
        next = TaskMessage.retryArguments(retry, given: ([1, 2], [:]), parameters: [])
        #expect(next.args == [1, 2])
        #expect(next.kwargs == ["foo": 2])
    }

    @Test func codableStructsDecodeFromAndEncodeToJSONObjects() async throws {
        #expect(try await call("tasks.add_model", [["x": 2, "y": 3]]) == ["result": 5])
        #expect(try await call("tasks.add_model", [], ["data": ["y": 3, "x": 2, "extra": "ignored"]]) == ["result": 5])
    }

    @Test func jsonThatDoesNotFitACodableStructIsAValidationError() async throws {
        for (input, detail) in [
            (["x": 1] as JSONValue, "y\n  Field required [type=missing, input_type=dict]"),
            (["x": 1, "y": "two"], "y\n  Input should be a valid integer"),
            ([1, 2], "Input should be a valid dictionary"),
        ] {
            let error = await #expect(throws: PythonException.self) { try await call("tasks.add_model", [input]) }
            #expect(error?.pythonExceptionType == "ValidationError")
            #expect(error?.pythonExceptionModule == "pydantic_core._pydantic_core")
            let message = error?.pythonExceptionArguments.first?.stringValue ?? ""
            #expect(message.hasPrefix("1 validation error for AddParameters\n"), "\(message)")
            #expect(message.contains(detail), "\(message)")
        }
    }

    static let successes: [(String, [JSONValue], JSONObject, JSONValue)] = [
        ("tasks.add", [2, 3], [:], 5),
        ("tasks.add", [2], ["y": 3], 5),
        ("tasks.add", [], ["y": 3, "x": 2], 5),
        ("tasks.add", [1.5, 2], [:], 3.5),
        ("tasks.add", ["a", "b"], [:], "ab"),
        ("tasks.add", [.int(Int.max - 1), 1], [:], .int(Int.max)),
        ("tasks.mul", [6, 7], [:], 42),
        ("tasks.xsum", [[1, 2, 3.5]], [:], 6.5),
        ("tasks.identity", [["nested": [1, nil, true]]], [:], ["nested": [1, nil, true]]),
        ("tasks.echo", [1, "x"], ["k": 2], ["args": [1, "x"], "kwargs": ["k": 2]]),
        ("tasks.cpu", [100], [:], 25),
        ("tasks.sleep", [0], [:], 0),
        ("t.greet", ["ann"], [:], "hello ann"),
        ("t.greet", ["ann"], ["greeting": "hi"], "hi ann"),
        ("t.typed", [1, [0.5, 1]], ["m": ["a": true]], 3.5),
    ]

    @Test(arguments: successes)
    func bindsAndRuns(name: String, args: [JSONValue], kwargs: JSONObject, expected: JSONValue) async throws {
        #expect(try await call(name, args, kwargs) == expected)
    }

    static let typeErrors: [(String, [JSONValue], JSONObject, String)] = [
        ("tasks.add", [1], [:], "add() missing 1 required positional argument: 'y'"),
        ("tasks.add", [], [:], "add() missing 2 required positional arguments: 'x' and 'y'"),
        ("tasks.add", [1, 2, 3], [:], "add() takes 2 positional arguments but 3 were given"),
        ("tasks.add", [1, 2], ["z": 1], "add() got an unexpected keyword argument 'z'"),
        ("tasks.add", [1, 2], ["x": 1], "add() got multiple values for argument 'x'"),
        ("tasks.add", ["a", 1], [:], "unsupported operand type(s) for +: 'str' and 'int'"),
        ("tasks.fail", [1], [:], "fail() argument 'message' must be str, not int"),
        ("tasks.cpu", ["x"], [:], "cpu() argument 'n' must be int, not str"),
        ("t.typed", [1, [1, "x"], [:]], [:], "typed() argument 'xs' must be list[float], not list"),
    ]

    @Test(arguments: typeErrors)
    func reportsTypeErrorsAsPython(name: String, args: [JSONValue], kwargs: JSONObject, message: String) async {
        do {
            let result = try await call(name, args, kwargs)
            Issue.record("expected TypeError, got \(result)")
        } catch let error as PythonException {
            #expect(error.pythonExceptionType == "TypeError")
            #expect(error.pythonExceptionModule == "builtins")
            #expect(error.pythonExceptionArguments == [.string(message)])
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func failRaisesValueError() async {
        do {
            _ = try await call("tasks.fail", ["boom"])
            Issue.record("no error")
        } catch let error as PythonException {
            #expect(error.pythonExceptionType == "ValueError")
            #expect(error.pythonExceptionArguments == ["boom"])
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func swiftErrorsKeepTheirTypeName() {
        struct DiskFull: Error {}
        let stored = StoredException(DiskFull())
        #expect(stored.type == "DiskFull")
        #expect(stored.module == "swift")
        #expect(stored.resultJSON["exc_message"]?.arrayValue?.count == 1)
    }

    @Test func blockingHandlersDeclareThemselves() {
        #expect(Self.registry["tasks.cpu"]?.options.blocking == true)
        #expect(Self.registry["tasks.add"]?.options.blocking == false)
        #expect(Self.registry.names.contains("tasks.echo"))
    }

    @Test(arguments: [
        (0, "celery"), (2, "celery"), (3, "celery\u{06}\u{16}3"), (7, "celery\u{06}\u{16}6"),
        (9, "celery\u{06}\u{16}9"),
    ])
    func priorityLists(priority: Int, list: String) {
        #expect(KombuLayout.list(queue: "celery", priority: priority) == list)
    }

    @Test func brpopOrderIsPriorityThenQueue() {
        let sep = "\u{06}\u{16}"
        #expect(
            KombuLayout.lists(queues: ["qa", "qb"]) == [
                "qa", "qb", "qa\(sep)3", "qb\(sep)3", "qa\(sep)6", "qb\(sep)6", "qa\(sep)9", "qb\(sep)9",
            ]
        )
    }
}
