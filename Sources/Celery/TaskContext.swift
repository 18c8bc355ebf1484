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
    /// A logger carrying `celery.task.id` and `celery.task.name`.
    public var logger: Logger
    /// Redis (from `REDIS_URL`, else the broker) for the handler's own use, on the worker's shared connection.
    public var redis: RedisClient

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
final class ArgumentBinder {
    let function: String
    let parameters: [String]
    let arguments: TaskArguments
    private var position = 0

    init(taskName: String, parameters: [String], arguments: TaskArguments) throws(PythonException) {
        self.function = (taskName.split(separator: ".").last.map(String.init) ?? taskName) + "()"
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
    func checkMissing(optional: [Bool]) throws(PythonException) {
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
    func next<A: TaskArgument>(_ type: A.Type) throws(PythonException) -> A {
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
            throw .typeError(
                "\(function) argument '\(name)' must be \(A.pythonTypeName), not \(pythonTypeName(of: json))"
            )
        }
        return value
    }
}
