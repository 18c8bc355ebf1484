import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import Redis

/// What a handler knows about the task it runs.
public struct TaskContext: Sendable {
    /// The task id.
    public var id: String
    /// The registered task name.
    public var name: String
    /// How many times this task has been retried before.
    public var retries: Int
    /// This worker's node name (`swift@host`).
    public var hostname: String
    /// Where the message came from.
    public var deliveryInfo: DeliveryInfo
    /// The message headers (custom ones included).
    public var headers: JSONObject
    /// A logger carrying `celery.task.id` and `celery.task.name`. It is made when read (setting a log handler's
    /// metadata re-renders it, a cost the worker would otherwise pay for every task): copy it into a local when a
    /// handler logs many lines.
    public var logger: Logger {
        get { customLogger ?? TaskContext.logger(workerLogger, taskID: id, taskName: name) }
        set { customLogger = newValue }
    }
    /// Redis (from `REDIS_URL`, else the broker) for the handler's own use, on the worker's shared connection.
    public var redis: RedisClient
    /// The worker's logger, without the task's metadata.
    package var workerLogger: Logger
    /// A logger a handler assigned.
    package var customLogger: Logger?
    /// The message the task came in; nil in a context made outside a worker.
    package var message: TaskMessage?
    /// The hard and soft time limits in force, in seconds (set by the worker).
    package var limits: (hard: Double?, soft: Double?) = (nil, nil)

    package init(
        id: String,
        name: String,
        retries: Int,
        hostname: String,
        deliveryInfo: DeliveryInfo,
        headers: JSONObject,
        logger: Logger,
        redis: RedisClient
    ) {
        self.id = id
        self.name = name
        self.retries = retries
        self.hostname = hostname
        self.deliveryInfo = deliveryInfo
        self.headers = headers
        self.workerLogger = logger
        self.redis = redis
    }

    /// The worker running the task, for ``updateState(_:meta:)``; nil in a context made outside a worker.
    package var worker: Worker?

    /// Stores a state of the task's own while it runs, as Celery's `self.update_state(state=..., meta=...)`: for
    /// example `PROGRESS` with `["current": 40, "total": 100]`. Python's `AsyncResult.state` shows the state and
    /// `.info` the meta until the task ends and its result replaces them. It goes out with the worker's next batch
    /// of results (within milliseconds); outside a worker it does nothing.
    public func updateState(_ state: String, meta: JSONValue = .null) {
        worker?.storeCustomState(state, meta: meta, taskID: id)
    }

    /// The context of the task `message` carries, on this worker.
    package init(message: TaskMessage, hostname: String, logger: Logger, redis: RedisClient, worker: Worker? = nil) {
        self.init(
            id: message.id,
            name: message.taskName,
            retries: message.retries,
            hostname: hostname,
            deliveryInfo: DeliveryInfo(
                exchange: message.exchange,
                routingKey: message.routingKey,
                priority: message.priority,
                redelivered: message.redelivered
            ),
            headers: message.headers,
            logger: logger,
            redis: redis
        )
        self.worker = worker
        self.message = message
        self.limits = message.timeLimit
    }

    /// `logger` with the task's id and name as metadata.
    package static func logger(_ logger: Logger, taskID: String, taskName: String) -> Logger {
        var logger = logger
        logger[metadataKey: "celery.task.id"] = "\(taskID)"
        logger[metadataKey: "celery.task.name"] = "\(taskName)"
        return logger
    }

    /// The exchange, routing key, priority and redelivery flag of the message.
    public struct DeliveryInfo: Sendable, Hashable {
        public var exchange: String
        public var routingKey: String
        public var priority: Int
        public var redelivered: Bool
    }
}

/// The raw arguments of a call, for handlers that take `*args, **kwargs`.
public struct TaskArguments: Sendable {
    /// Positional arguments.
    public var args: [JSONValue]
    /// Keyword arguments, in the order sent.
    public var kwargs: JSONObject

    public init(args: [JSONValue], kwargs: JSONObject) {
        self.args = args
        self.kwargs = kwargs
    }
}

/// Binds a call's positional and keyword arguments to named parameters, with Python's error messages.
@usableFromInline
package final class ArgumentBinder {
    package let taskName: String
    package let parameters: [String]
    package let arguments: TaskArguments
    private var position = 0

    /// How Python names the function in a TypeError: `add()` for `tasks.add` (made only for an error).
    package var function: String { (taskName.split(separator: ".").last.map(String.init) ?? taskName) + "()" }

    @usableFromInline
    package init(taskName: String, parameters: [String], arguments: TaskArguments) throws(PythonException) {
        self.taskName = taskName
        self.parameters = parameters
        self.arguments = arguments
        if arguments.args.count > parameters.count {
            let takes = parameters.count == 1 ? "1 positional argument" : "\(parameters.count) positional arguments"
            let given = arguments.args.count == 1 ? "1 was" : "\(arguments.args.count) were"
            throw .typeError("\(function) takes \(takes) but \(given) given")
        }
        for key in arguments.kwargs.keys {
            guard let index = parameters.firstIndex(of: key) else {
                throw .typeError("\(function) got an unexpected keyword argument '\(key)'")
            }
            if index < arguments.args.count {
                throw .typeError("\(function) got multiple values for argument '\(key)'")
            }
        }
    }

    /// Checks that every parameter without a default has a value (Python reports all missing ones at once).
    @usableFromInline
    package func checkMissing(optional: [Bool]) throws(PythonException) {
        var missing: [String] = []
        for (index, name) in parameters.enumerated()
        where index >= arguments.args.count && arguments.kwargs[name] == nil && !optional[index] {
            missing.append("'\(name)'")
        }
        guard !missing.isEmpty else { return }
        let list: String
        if missing.count == 1 {
            list = missing[0]
        } else {
            list = missing.dropLast().joined(separator: ", ") + " and " + missing.last!
        }
        let noun = missing.count == 1 ? "argument" : "arguments"
        throw .typeError("\(function) missing \(missing.count) required positional \(noun): \(list)")
    }

    /// The next parameter's value, decoded as `type`.
    @usableFromInline
    package func next<A: TaskArgument>(_ type: A.Type) throws(PythonException) -> A {
        let index = position
        position += 1
        let name = parameters[index]
        let json: JSONValue? = index < arguments.args.count ? arguments.args[index] : arguments.kwargs[name]
        guard let json else {
            // checkMissing ran first, so only Optional parameters get here.
            guard let absent = A(taskArgument: .null) else {
                throw .typeError("\(function) missing 1 required positional argument: '\(name)'")
            }
            return absent
        }
        guard let value = A(taskArgument: json) else {
            if let error = A.validationError(for: json) { throw error }
            throw .typeError(
                "\(function) argument '\(name)' must be \(A.pythonTypeName), not \(pythonTypeName(of: json))"
            )
        }
        return value
    }
}
