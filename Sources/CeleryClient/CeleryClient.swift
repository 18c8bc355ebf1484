import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import RESP
import Redis

/// Sends Celery tasks from Swift, byte-compatible with Python's `apply_async`, so Python (or Swift) workers run
/// them, and reads their results like Python's `AsyncResult`.
///
/// ```swift
/// let client = CeleryClient(broker: broker, backend: backend)
/// let result = try await client.send("tasks.add", args: [2, 3])
/// let sum = try await result.get(timeout: .seconds(10))   // 5
/// let total = try await client.chord(
///     (0..<10).map { Signature("tasks.add", args: [.int($0), .int($0)]) },
///     Signature("tasks.xsum")
/// ).get()                                                  // 90
/// ```
public final class CeleryClient: Sendable {
    public let broker: RedisClient
    public let backend: RedisClient
    /// Where tasks go when their options name no queue.
    public let defaultQueue: String
    /// The sender's node name (`headers.origin`).
    public let origin: String
    /// This client's id (`properties.reply_to`), as Python's app oid.
    public let oid: String
    /// How long chord state is kept (the chord size key), as `result_expires`.
    public let resultExpires: Duration

    public init(
        broker: RedisClient,
        backend: RedisClient,
        defaultQueue: String = "celery",
        origin: String? = nil,
        resultExpires: Duration = .seconds(86400)
    ) {
        self.broker = broker
        self.backend = backend
        self.defaultQueue = defaultQueue
        self.origin = origin ?? "swift-client@" + HostName.current()
        self.oid = OutgoingTask.newID()
        self.resultExpires = resultExpires
    }

    /// The result of task `id` (sent by anyone).
    public func result(_ id: String) -> AsyncResult {
        AsyncResult(id: id, backend: backend)
    }

    /// Sends task `name` with positional and keyword arguments.
    @discardableResult
    public func send(
        _ name: String,
        args: [JSONValue] = [],
        kwargs: JSONObject = [:],
        options: SendOptions = SendOptions()
    ) async throws(CeleryClientError) -> AsyncResult {
        try await send(Signature(name, args: args, kwargs: kwargs, options: options))
    }

    /// Sends one signature.
    @discardableResult
    public func send(_ signature: Signature) async throws(CeleryClientError) -> AsyncResult {
        let task = try message(for: signature)
        try await publish([task])
        return result(task.id)
    }

    /// Sends a chain: each task gets the previous one's result prepended (unless immutable). Returns the last
    /// task's result.
    @discardableResult
    public func chain(_ signatures: [Signature]) async throws(CeleryClientError) -> AsyncResult {
        guard !signatures.isEmpty else {
            throw CeleryClientError(.invalidRequest, "a chain needs at least one task")
        }
        let steps = signatures.map { $0.options.taskID == nil ? $0.withID(OutgoingTask.newID()) : $0 }
        var task = try message(for: steps[0])
        // The rest travels in the first message, reversed (the next hop last), each with its id assigned.
        let rest = steps.dropFirst().reversed().map { $0.json(extraOptions: ["reply_to": .string(oid)]) }
        task.chain = rest.isEmpty ? nil : Array(rest)
        try await publish([task])
        return result(steps[steps.count - 1].options.taskID!)
    }

    /// Sends a group: every task at once, with one group id; the results come back in the group's order.
    @discardableResult
    public func group(_ signatures: [Signature]) async throws(CeleryClientError) -> GroupResult {
        let groupID = OutgoingTask.newID()
        var tasks: [OutgoingTask] = []
        for (index, signature) in signatures.enumerated() {
            var task = try message(for: signature)
            task.groupID = groupID
            task.groupIndex = index
            tasks.append(task)
        }
        try await publish(tasks)
        return GroupResult(id: groupID, results: tasks.map { result($0.id) }, backend: backend)
    }

    /// Sends a chord: the header tasks as a group, and `body` called with the list of their results (in header
    /// order) once all have succeeded, by whichever worker finishes the last one. Returns the body's result; if a
    /// header task fails, the body is not run and its result is a `ChordError`.
    @discardableResult
    public func chord(_ header: [Signature], _ body: Signature) async throws(CeleryClientError) -> AsyncResult {
        let groupID = OutgoingTask.newID()
        let callbackID = body.options.taskID ?? OutgoingTask.newID()
        guard !header.isEmpty else {
            // Celery runs the body at once with an empty list.
            var task = try message(for: body.withID(callbackID))
            if !body.immutable { task.args.insert([], at: 0) }
            try await publish([task])
            return result(callbackID)
        }
        let callback = body.withID(callbackID).json(extraOptions: [
            "reply_to": .string(oid), "group_id": .string(groupID),
        ])
        var tasks: [OutgoingTask] = []
        for (index, signature) in header.enumerated() {
            var task = try message(for: signature)
            task.groupID = groupID
            task.groupIndex = index
            task.chord = callback
            tasks.append(task)
        }
        // As Celery: everything but the last header task, then the chord size (with a fresh claim), then the last.
        let chord = RedisChord(groupID: groupID)
        try await publish(Array(tasks.dropLast()))
        do {
            let replies = try await backend.pipeline([
                RESPCommand("DEL", chord.claimKey),
                RESPCommand("SET", chord.sizeKey, String(tasks.count), "EX", String(Int(resultExpires.seconds))),
            ])
            for reply in replies { _ = try reply.get() }
        } catch {
            throw CeleryClientError(.redis, "cannot store the chord size: \(error.message)", underlyingError: error)
        }
        try await publish([tasks[tasks.count - 1]])
        return result(callbackID)
    }

    /// The message for a signature, as `apply_async` builds it.
    package func message(for signature: Signature) throws(CeleryClientError) -> OutgoingTask {
        guard !signature.name.isEmpty else { throw CeleryClientError(.invalidRequest, "the task name is empty") }
        let options = signature.options
        if let priority = options.priority, !(0...255).contains(priority) {
            throw CeleryClientError(.invalidRequest, "priority must be 0–255, got \(priority)")
        }
        var task = OutgoingTask(
            name: signature.name,
            id: options.taskID ?? OutgoingTask.newID(),
            args: signature.args,
            kwargs: signature.kwargs,
            queue: options.queue ?? defaultQueue,
            priority: options.priority ?? 0,
            origin: origin
        )
        let now = CeleryTimestamp.now()
        if let countdown = options.countdown {
            task.eta = CeleryTimestamp(secondsSince1970: now.secondsSince1970 + countdown.seconds)
        } else {
            task.eta = options.eta
        }
        switch options.expires {
        case .after(let duration)?:
            task.expires = CeleryTimestamp(secondsSince1970: now.secondsSince1970 + duration.seconds)
        case .at(let time)?: task.expires = time
        case nil: break
        }
        task.headers = options.headers
        task.hardTimeLimit = options.timeLimit
        task.softTimeLimit = options.softTimeLimit
        task.ignoreResult = options.ignoreResult
        task.shadow = options.shadow
        task.replyTo = oid
        task.callbacks = options.link.isEmpty ? nil : options.link.map(\.json)
        task.errbacks = options.linkError.isEmpty ? nil : options.linkError.map(\.json)
        return task
    }

    private func publish(_ tasks: [OutgoingTask]) async throws(CeleryClientError) {
        guard !tasks.isEmpty else { return }
        do {
            let commands = tasks.map { RESPCommand("LPUSH", $0.list, RESPBytes($0.envelope())) }
            for reply in try await broker.pipeline(commands) { _ = try reply.get() }
        } catch {
            throw CeleryClientError(.redis, "cannot send the task: \(error.message)", underlyingError: error)
        }
    }
}
