import Celery
import JSON
import RESP

/// The handlers this worker ships with. Python enqueues them through the stubs in `tasks/python/swift_tasks`.
public enum TaskCatalog {
    /// Registers every shipped task in `registry`.
    public static func register(in registry: inout TaskRegistry) {
        registry.register("tasks.add", parameters: ["x", "y"], documentation: "x + y") {
            (_, x: JSONValue, y: JSONValue) in
            try Arithmetic.add(x, y)
        }
        registry.register("tasks.mul", parameters: ["x", "y"], documentation: "x * y") {
            (_, x: JSONValue, y: JSONValue) in
            try Arithmetic.multiply(x, y)
        }
        registry.register("tasks.xsum", parameters: ["numbers"], documentation: "sum(numbers)") {
            (_, numbers: [JSONValue]) in
            try numbers.reduce(JSONValue.int(0)) { try Arithmetic.add($0, $1) }
        }
        registry.register("tasks.identity", parameters: ["value"], documentation: "value, unchanged") {
            (_, value: JSONValue) in value
        }
        registry.register("tasks.echo", documentation: #"{"args": [...], "kwargs": {...}}"#) { _, arguments in
            ["args": .array(arguments.args), "kwargs": .object(arguments.kwargs)]
        }
        registry.register("tasks.sleep", parameters: ["seconds"], documentation: "sleeps, then returns seconds") {
            (_, seconds: JSONValue) in
            let value: Double
            switch seconds {
            case .int(let i): value = Double(i)
            case .double(let d): value = d
            default:
                throw PythonException.typeError(
                    "sleep() argument 'seconds' must be a number, not \(pythonTypeName(of: seconds))"
                )
            }
            guard value >= 0, value.isFinite else {
                throw PythonException.valueError("sleep length must be non-negative")
            }
            // Suspends the task, not a thread: thousands can sleep at once.
            try await Task.sleep(for: .nanoseconds(Int64(value * 1e9)))
            return seconds
        }
        registry.register("tasks.fail", parameters: ["message"], documentation: "raises ValueError(message)") {
            (_, message: String) -> NoResult in
            throw PythonException.valueError(message)
        }
        registry.registerBlocking("tasks.cpu", parameters: ["n"], documentation: "the number of primes below n") {
            (_, n: Int) in
            primes(below: n)
        }
        registry.register(
            "tasks.flaky",
            parameters: ["failures"],
            documentation:
                "retries itself (countdown 0.1 s) until retries == failures, then returns the number of retries"
        ) { (context, failures: Int) in
            guard context.retries >= failures else {
                let cause = PythonException(type: "RuntimeError", "failure \(context.retries + 1) of \(failures)")
                throw TaskRetry(countdown: .milliseconds(100), maxRetries: nil, cause: cause)
            }
            return context.retries
        }
        registry.register(
            "tasks.retry_header",
            parameters: ["name"],
            documentation:
                "retries itself once (countdown 0.1 s), then returns the custom header `name` (None if absent)"
        ) { (context, name: String) -> JSONValue in
            guard context.retries > 0 else { throw TaskRetry(countdown: .milliseconds(100)) }
            return context.headers[name] ?? .null
        }
        // Celery's own integration tasks retry_with_args_after_kwargs / retry_with_kwargs_after_args: a retry that
        // passes only args (or only kwargs) keeps the message's other arguments that do not clash.
        registry.register(
            "tasks.retry_with_args",
            parameters: ["foo", "bar", "label"],
            documentation:
                "on its first run retries with args (foo + 1, bar + 1); then returns {foo, bar, label, retries}"
        ) { (context, foo: Int, bar: Int, label: String?) -> JSONValue in
            guard context.retries > 0 else {
                throw TaskRetry(countdown: .zero, maxRetries: 1, args: [.int(foo + 1), .int(bar + 1)])
            }
            return [
                "foo": .int(foo), "bar": .int(bar), "label": label.map(JSONValue.string) ?? .null,
                "retries": .int(context.retries),
            ]
        }
        registry.register(
            "tasks.retry_with_kwargs",
            parameters: ["foo", "bar"],
            documentation: "on its first run retries with kwargs {foo: foo + 1}; then returns {foo, bar, retries}"
        ) { (context, foo: Int, bar: Int) -> JSONValue in
            guard context.retries > 0 else {
                throw TaskRetry(countdown: .zero, maxRetries: 1, kwargs: ["foo": .int(foo + 1)])
            }
            return ["foo": .int(foo), "bar": .int(bar), "retries": .int(context.retries)]
        }
        registry.register(
            "tasks.countdown_sum",
            parameters: ["n", "total"],
            documentation:
                "while n > 0, retries itself (countdown 0.1 s) with args (n - 1,) and kwargs {total: total + n}; "
                + "returns total (default 0)"
        ) { (_, n: Int, total: Int?) in
            let total = total ?? 0
            guard n <= 0 else {
                throw TaskRetry(
                    countdown: .milliseconds(100),
                    maxRetries: nil,
                    args: [.int(n - 1)],
                    kwargs: ["total": .int(total + n)]
                )
            }
            return total
        }
        // At most 20 starts a second across every worker on the Redis (a global rate limit): appends its start time
        // (Unix seconds) to the list `key` and returns it.
        registry.register(
            "tasks.throttled",
            parameters: ["key"],
            options: TaskOptions(globalRateLimit: "20/s"),
            documentation:
                "at most 20 starts a second across all workers: RPUSH key <start time>; returns the start time"
        ) { (context, key: String) in
            let now = CeleryTimestamp.now().secondsSince1970
            try await context.redis.send(RESPCommand("RPUSH", key, String(now)))
            return now
        }
        registry.register(
            "tasks.incr",
            parameters: ["key"],
            documentation: "INCR key in Redis (REDIS_URL, else the broker); returns the new value"
        ) { (context, key: String) in
            let reply = try await context.redis.send(RESPCommand("INCR", key))
            guard let value = reply.int else { throw PythonException.typeError("INCR answered \(reply)") }
            return value
        }
        registry.register(
            "tasks.reject",
            parameters: ["key", "requeue"],
            documentation:
                "INCR key; unless its message was redelivered, rejects it (Reject('rejected', requeue)); "
                + "returns the new value"
        ) { (context, key: String, requeue: Bool) in
            let reply = try await context.redis.send(RESPCommand("INCR", key))
            guard let value = reply.int else { throw PythonException.typeError("INCR answered \(reply)") }
            guard context.deliveryInfo.redelivered else { throw TaskReject("rejected", requeue: requeue) }
            return value
        }
        // Celery's per-task acks_late: acked after it ran whatever the worker's --acks-late.
        registry.register(
            "tasks.reject_late",
            parameters: ["key"],
            options: TaskOptions(acksLate: true),
            documentation:
                "acks_late=True; INCR key; unless its message was redelivered, rejects it with requeue; "
                + "returns the new value"
        ) { (context, key: String) in
            let reply = try await context.redis.send(RESPCommand("INCR", key))
            guard let value = reply.int else { throw PythonException.typeError("INCR answered \(reply)") }
            guard context.deliveryInfo.redelivered else { throw TaskReject("rejected", requeue: true) }
            return value
        }
        registry.register(
            "tasks.progress",
            parameters: ["steps", "pause"],
            documentation:
                "reports PROGRESS {current, total} after each of `steps` pauses of `pause` seconds; returns steps"
        ) { (context, steps: Int, pause: Double) in
            for step in 1...max(1, steps) {
                try await Task.sleep(for: .milliseconds(Int64(max(0, pause) * 1000)))
                context.updateState("PROGRESS", meta: ["current": .int(step), "total": .int(steps)])
            }
            return steps
        }
        registerCrash(in: &registry)
        registerReplacing(in: &registry)
        registerErrbacks(in: &registry)
        registry.register(
            "tasks.add_model",
            parameters: ["data"],
            documentation: #"{"result": data.x + data.y}: Codable structs, as pydantic models"#
        ) { (_, data: AddParameters) in
            AddResult(result: data.x + data.y)
        }
        registerAddToChord(in: &registry)
    }

    /// Registers `tasks.errback_new_style`, an errback in Celery's new style: more than one free parameter, so the
    /// worker where a task fails calls it in place with the failed task's request, its exception and traceback.
    static func registerErrbacks(in registry: inout TaskRegistry) {
        registry.register(
            "tasks.errback_new_style",
            parameters: ["request", "exc", "tb", "key"],
            documentation:
                "as a new-style errback: RPUSH key '<failed id> <exception type> <traceback's first line>'"
        ) { context, arguments in
            let call = arguments.args + arguments.kwargs.values
            guard call.count == 4, let key = call[3].stringValue else {
                throw PythonException.typeError("errback_new_style() takes 4 arguments (request, exc, tb, key)")
            }
            let id = call[0]["id"]?.stringValue ?? "?"
            let type = call[1]["exc_type"]?.stringValue ?? "?"
            let traceback = call[2].stringValue?.split(separator: "\n").first.map(String.init) ?? "None"
            _ = try await context.redis.send(RESPCommand("RPUSH", key, "\(id) \(type) \(traceback)"))
            return .null
        }
    }

    /// Registers `tasks.add_to_all_to_chord` and `tasks.add_chord_to_chord`: header parts of a chord that add more
    /// parts to it (Celery's `self.add_to_chord(sig)`); and `tasks.build_chain`, which sends a canvas from inside
    /// the task (Celery's `sig.apply_async()` in a task) and returns its result.
    static func registerAddToChord(in registry: inout TaskRegistry) {
        registry.register(
            "tasks.add_to_all_to_chord",
            parameters: ["nums", "val"],
            documentation: "in a chord header: adds tasks.add(num, val) to the chord for each num; returns 0"
        ) { (context, nums: [JSONValue], val: JSONValue) in
            for num in nums {
                try await context.addToChord(Signature("tasks.add", args: [num, val]))
            }
            return 0
        }
        registry.register(
            "tasks.add_chord_to_chord",
            parameters: ["nums", "val"],
            documentation:
                "in a chord header: adds the chord group(tasks.add(num, val) for num in nums) | tasks.xsum() to the "
                + "chord; returns 0"
        ) { (context, nums: [JSONValue], val: JSONValue) in
            let members = nums.map { Signature("tasks.add", args: [$0, val]).json }
            try await context.addToChord(Canvas.chord(members, body: Signature("tasks.xsum").json))
            return 0
        }
        registry.register(
            "tasks.build_chain",
            parameters: ["x"],
            documentation:
                "sends add(x, x) | add(2) | group(add(3), add(4)) | xsum() from the task and returns its "
                + "AsyncResult (as Celery stores one: its as_tuple())"
        ) { (context, x: Int) in
            let canvas = Canvas.chain([
                Signature("tasks.add", args: [.int(x), .int(x)]).json, Signature("tasks.add", args: [2]).json,
                Canvas.group([Signature("tasks.add", args: [3]).json, Signature("tasks.add", args: [4]).json]),
                Signature("tasks.xsum").json,
            ])
            return try await context.send(canvas).resultTuple
        }
    }

    /// Registers `tasks.crash`, a handler with a bug on demand: it reads past the end of an array, which traps and
    /// takes the whole worker down, as a force unwrap or an index out of range in a real handler would. It shows
    /// the crash guard (`--max-crashes`): under `--acks-late` such a message is failed with WorkerLostError after a
    /// few crashes instead of crashing every worker in turn.
    static func registerCrash(in registry: inout TaskRegistry) {
        registry.register(
            "tasks.crash",
            parameters: ["trap", "seconds"],
            documentation: "sleeps seconds (default 0), then, if trap, traps the worker process; else returns False"
        ) { (_, trap: Bool, seconds: Double?) in
            if let seconds, seconds > 0, seconds.isFinite {
                try await Task.sleep(for: .nanoseconds(Int64(seconds * 1e9)))
            }
            guard trap else { return false }
            let empty: [Bool] = []
            return empty[empty.count]
        }
    }

    /// The number of primes below `n` (a sieve): deterministic CPU work for `tasks.cpu`.
    public static func primes(below n: Int) -> Int {
        guard n > 2 else { return 0 }
        var composite = [Bool](repeating: false, count: n)
        var count = 0
        for i in 2..<n where !composite[i] {
            count += 1
            var multiple = i * i
            while multiple < n {
                composite[multiple] = true
                multiple += i
            }
        }
        return count
    }
}

/// `tasks.add_model`'s parameter: the JSON object `{"x": ..., "y": ...}` (a pydantic model on the Python side).
public struct AddParameters: CodableTaskValue {
    public var x: Int
    public var y: Int
}

/// `tasks.add_model`'s result: `{"result": ...}`.
public struct AddResult: CodableTaskValue {
    public var result: Int
}

/// Python's `+` and `*` on the JSON values Python sends: ints stay exact, floats mix in, strings and lists
/// concatenate; anything else is Python's TypeError.
enum Arithmetic {
    static func add(_ x: JSONValue, _ y: JSONValue) throws -> JSONValue {
        switch (x, y) {
        case (.int(let a), .int(let b)):
            let (sum, overflow) = a.addingReportingOverflow(b)
            guard !overflow else {
                throw PythonException(type: "OverflowError", "integer result does not fit in 64 bits")
            }
            return .int(sum)
        case (.string(let a), .string(let b)): return .string(a + b)
        case (.array(let a), .array(let b)): return .array(a + b)
        default:
            if let a = number(x), let b = number(y) { return .double(a + b) }
            throw PythonException.typeError(
                "unsupported operand type(s) for +: '\(pythonTypeName(of: x))' and '\(pythonTypeName(of: y))'"
            )
        }
    }

    static func multiply(_ x: JSONValue, _ y: JSONValue) throws -> JSONValue {
        switch (x, y) {
        case (.int(let a), .int(let b)):
            let (product, overflow) = a.multipliedReportingOverflow(by: b)
            guard !overflow else {
                throw PythonException(type: "OverflowError", "integer result does not fit in 64 bits")
            }
            return .int(product)
        default:
            if let a = number(x), let b = number(y) { return .double(a * b) }
            throw PythonException.typeError(
                "unsupported operand type(s) for *: '\(pythonTypeName(of: x))' and '\(pythonTypeName(of: y))'"
            )
        }
    }

    private static func number(_ value: JSONValue) -> Double? {
        switch value {
        case .int(let i): Double(i)
        case .double(let d): d
        default: nil
        }
    }
}
