import CeleryProtocol
import CeleryRedis
import JSON
import NIOCore
import NIOPosix
import Synchronization

/// Per-handler settings.
public struct TaskOptions: Sendable {
    /// Run the handler on a thread pool, off the event loops and the cooperative pool (CPU-bound or blocking
    /// code). Blocking handlers are synchronous closures.
    public var blocking: Bool
    /// Never store a result for this task (the message's `ignore_result` header can also ask for it).
    public var ignoreResult: Bool
    /// Celery's `soft_time_limit` when the message sets none: the handler is cancelled and, if it then throws,
    /// fails with `SoftTimeLimitExceeded`.
    public var softTimeLimit: Duration?
    /// Celery's `time_limit` when the message sets none: the task fails with `TimeLimitExceeded` and its slot is
    /// freed.
    public var timeLimit: Duration?

    /// Celery's `autoretry_for`: errors the worker retries by itself (nil: none).
    public var autoretry: AutoRetry?
    /// Celery's per-worker `rate_limit` (`"10/s"`, `"100/m"`, `"1000/h"`): each worker starts at most this many
    /// tasks of this name, evenly spaced; `celery control rate_limit` changes it at run time.
    public var rateLimit: String?
    /// A rate limit shared by every worker on the broker's Redis (`"100/s"`): together they start at most this
    /// many tasks of this name, evenly spaced (Celery has no such option).
    public var globalRateLimit: String?
    /// Celery's per-task `acks_late`: ack after the task ran (true) or before (false); nil follows the worker's
    /// `--acks-late`.
    public var acksLate: Bool?

    public init(
        blocking: Bool = false,
        ignoreResult: Bool = false,
        softTimeLimit: Duration? = nil,
        timeLimit: Duration? = nil,
        autoretry: AutoRetry? = nil,
        rateLimit: String? = nil,
        globalRateLimit: String? = nil,
        acksLate: Bool? = nil
    ) {
        self.blocking = blocking
        self.ignoreResult = ignoreResult
        self.softTimeLimit = softTimeLimit
        self.timeLimit = timeLimit
        self.autoretry = autoretry
        self.rateLimit = rateLimit
        self.globalRateLimit = globalRateLimit
        self.acksLate = acksLate
    }
}

/// Celery's `autoretry_for` with `retry_backoff`, `retry_backoff_max`, `retry_jitter` and `max_retries`.
public struct AutoRetry: Sendable {
    /// Which thrown errors are retried.
    public var matches: @Sendable (any Error) -> Bool
    /// Retries allowed in all (nil: forever); past it the task fails with the error. Celery's default is 3.
    public var maxRetries: Int?
    /// The first delay; each retry doubles it (Celery's `retry_backoff`), up to `maximumDelay`.
    public var backoff: Duration
    /// The largest delay (Celery's `retry_backoff_max`, 600 s).
    public var maximumDelay: Duration
    /// A random delay between 0 and the computed one (Celery's `retry_jitter`, on by default).
    public var jitter: Bool

    public init(
        maxRetries: Int? = 3,
        backoff: Duration = .seconds(1),
        maximumDelay: Duration = .seconds(600),
        jitter: Bool = true,
        matching matches: @escaping @Sendable (any Error) -> Bool
    ) {
        self.matches = matches
        self.maxRetries = maxRetries
        self.backoff = backoff
        self.maximumDelay = maximumDelay
        self.jitter = jitter
    }

    /// Retries errors of one type.
    public static func on<E: Error>(
        _ type: E.Type,
        maxRetries: Int? = 3,
        backoff: Duration = .seconds(1),
        maximumDelay: Duration = .seconds(600),
        jitter: Bool = true
    ) -> AutoRetry {
        AutoRetry(maxRetries: maxRetries, backoff: backoff, maximumDelay: maximumDelay, jitter: jitter) { $0 is E }
    }

    /// The delay before retry number `retries + 1`.
    package func delay(afterRetries retries: Int) -> Duration {
        let doubled = backoff * (1 << min(retries, 30))
        let capped = min(doubled, maximumDelay)
        guard jitter else { return capped }
        let nanoseconds = Double(capped.components.seconds) * 1e9 + Double(capped.components.attoseconds) / 1e9
        return .nanoseconds(Int64(Double.random(in: 0...nanoseconds)))
    }
}

/// A registered handler: decoding, the call and encoding of the result, behind one closure.
public struct RegisteredTask: Sendable {
    /// The name Python sends (`tasks.add`).
    public var name: String
    /// The parameter names, for `registered` and errors; empty for `*args, **kwargs` handlers.
    public var parameters: [String]
    public var options: TaskOptions
    /// What the task does, in a sentence or two: the docstring of its Python stub.
    public var documentation: String?
    /// Each parameter's Python type (`int`, `list[str]`, `str | None`) and whether it may be left out.
    @usableFromInline package var parameterTypes: [(python: String, optional: Bool)] = []
    /// The Python type of the result (`int`, `None`; `Any` where the Swift type names none).
    @usableFromInline package var resultType = "Any"
    package let run: @Sendable (TaskContext, TaskArguments) async throws -> JSONValue
    package let pace = HandlerPace()

    @usableFromInline
    init(
        name: String,
        parameters: [String],
        options: TaskOptions,
        documentation: String?,
        run: @escaping @Sendable (TaskContext, TaskArguments) async throws -> JSONValue
    ) {
        self.name = name
        self.parameters = parameters
        self.options = options
        self.documentation = documentation
        self.run = run
    }
}

/// How long a handler's recent runs took: the worker runs only a quick one on an event loop, where a long run
/// would hold up every connection on that loop.
package final class HandlerPace: Sendable {
    /// A decaying maximum of the run times in nanoseconds: each run sets it to the larger of its own time and half
    /// the previous value, so one slow run keeps the handler off the loop for several runs after it. `Int64.max`
    /// until a run has ended: a handler never seen is not known to be quick.
    private let slowest = Atomic<Int64>(.max)

    package func record(_ runtime: Duration) {
        let nanoseconds = TimeAmount(runtime).nanoseconds  // clamped to Int64.max
        let previous = slowest.load(ordering: .relaxed)
        // Racing executors may lose one another's update: either value serves.
        slowest.store(previous == .max ? nanoseconds : max(nanoseconds, previous / 2), ordering: .relaxed)
    }

    /// Whether the recent runs took less than `limit`.
    package func isQuick(below limit: Duration) -> Bool {
        slowest.load(ordering: .relaxed) < TimeAmount(limit).nanoseconds
    }
}

/// The set of tasks a worker runs, by name.
///
/// ```swift
/// var registry = TaskRegistry()
/// registry.register("tasks.add", parameters: ["x", "y"]) { (_, x: Int, y: Int) in x + y }
/// ```
/// Arguments bind as in Python: positionally, then by keyword; a missing, extra or wrongly typed argument fails
/// the task with a `TypeError` worded as Python words it. `Optional` parameters may be left out.
public struct TaskRegistry: Sendable {
    @usableFromInline var tasks: [String: RegisteredTask] = [:]

    public init() {}

    /// The handler registered under `name`.
    public subscript(name: String) -> RegisteredTask? { tasks[name] }

    /// All registered names, sorted.
    public var names: [String] { tasks.keys.sorted() }

    /// Registers a handler that takes the raw `*args, **kwargs`.
    public mutating func register(
        _ name: String,
        options: TaskOptions = TaskOptions(),
        documentation: String? = nil,
        _ handler: @escaping @Sendable (TaskContext, TaskArguments) async throws -> JSONValue
    ) {
        tasks[name] = RegisteredTask(
            name: name,
            parameters: [],
            options: options,
            documentation: documentation,
            run: handler
        )
    }

    /// Registers a handler that takes the raw `*args, **kwargs` under parameter names: they show in `registered`
    /// and the stubs, and count for Celery's errback rule (used as an errback, a handler with more than one
    /// parameter its signature leaves free is called in the failing worker with `(request, exc, traceback)`).
    public mutating func register(
        _ name: String,
        parameters: [String],
        options: TaskOptions = TaskOptions(),
        documentation: String? = nil,
        arguments handler: @escaping @Sendable (TaskContext, TaskArguments) async throws -> JSONValue
    ) {
        tasks[name] = RegisteredTask(
            name: name,
            parameters: parameters,
            options: options,
            documentation: documentation,
            run: handler
        )
    }

    /// Registers an async handler with typed, named parameters.
    ///
    /// Inlinable: the handler's argument decoding is specialized in the caller's module for its types.
    @inlinable
    public mutating func register<each A: TaskArgument, R: TaskResult>(
        _ name: String,
        parameters: [String],
        options: TaskOptions = TaskOptions(),
        documentation: String? = nil,
        _ handler: @escaping @Sendable (TaskContext, repeat each A) async throws -> R
    ) {
        let optional = Self.optionality(repeat (each A).self)
        precondition(
            optional.count == parameters.count,
            "\(name): \(parameters.count) names for \(optional.count) parameters"
        )
        var task = RegisteredTask(name: name, parameters: parameters, options: options, documentation: documentation) {
            context,
            arguments in
            let binder = try ArgumentBinder(taskName: name, parameters: parameters, arguments: arguments)
            try binder.checkMissing(optional: optional)
            return try await handler(context, repeat try binder.next((each A).self)).taskResultJSON
        }
        task.parameterTypes = Self.pythonTypes(repeat (each A).self, optional: optional)
        task.resultType = R.pythonResultTypeName
        tasks[name] = task
    }

    /// Registers a synchronous handler that runs on a thread pool (CPU-bound or blocking work).
    ///
    /// Inlinable: the handler's argument decoding is specialized in the caller's module for its types.
    @inlinable
    public mutating func registerBlocking<each A: TaskArgument, R: TaskResult>(
        _ name: String,
        parameters: [String],
        options: TaskOptions = TaskOptions(blocking: true),
        documentation: String? = nil,
        _ handler: @escaping @Sendable (TaskContext, repeat each A) throws -> R
    ) {
        let optional = Self.optionality(repeat (each A).self)
        precondition(
            optional.count == parameters.count,
            "\(name): \(parameters.count) names for \(optional.count) parameters"
        )
        var options = options
        options.blocking = true
        var task = RegisteredTask(name: name, parameters: parameters, options: options, documentation: documentation) {
            context,
            arguments in
            try await NIOThreadPool.singleton.runIfActive {
                let binder = try ArgumentBinder(taskName: name, parameters: parameters, arguments: arguments)
                try binder.checkMissing(optional: optional)
                return try handler(context, repeat try binder.next((each A).self)).taskResultJSON
            }
        }
        task.parameterTypes = Self.pythonTypes(repeat (each A).self, optional: optional)
        task.resultType = R.pythonResultTypeName
        tasks[name] = task
    }

    @usableFromInline static func pythonTypes<each A: TaskArgument>(
        _ types: repeat (each A).Type,
        optional: [Bool]
    ) -> [(python: String, optional: Bool)] {
        var result: [(python: String, optional: Bool)] = []
        for type in repeat each types {
            let name = type is JSONValue.Type ? "Any" : type.pythonTypeName
            result.append((name, optional[result.count]))
        }
        return result
    }

    @usableFromInline static func optionality<each A: TaskArgument>(_ types: repeat (each A).Type) -> [Bool] {
        var result: [Bool] = []
        for type in repeat each types {
            result.append(type.init(taskArgument: .null) != nil && !(type is JSONValue.Type))
        }
        return result
    }
}
