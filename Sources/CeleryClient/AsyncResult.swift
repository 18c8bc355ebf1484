import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import RESP
import Redis

/// A task that ended in FAILURE or REVOKED, as its stored result describes it.
public struct TaskFailure: Error, Sendable, CustomStringConvertible {
    public var taskID: String
    /// FAILURE or REVOKED.
    public var state: TaskState
    /// The exception's class name (`exc_type`), e.g. `ValueError`, `ChordError`.
    public var exceptionType: String
    /// The exception's module (`exc_module`), e.g. `builtins`, `celery.exceptions`.
    public var exceptionModule: String
    /// The exception's arguments (`exc_message`).
    public var arguments: [JSONValue]
    /// The worker's traceback text, if it stored one.
    public var traceback: String?

    /// Python's repr of the exception, e.g. `ValueError('bad thing')`.
    public var description: String {
        "\(exceptionType)(\(arguments.map(PythonRepr.render).joined(separator: ", ")))"
    }
}

/// Why the client could not send a task or read a result.
public struct CeleryClientError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        /// No ready result within the timeout.
        public static let timeout = Code(name: "timeout")
        /// Redis failed.
        public static let redis = Code(name: "redis")
        /// A stored result that is not Celery's meta document.
        public static let malformedResult = Code(name: "malformed result")
        /// Arguments that cannot be sent.
        public static let invalidRequest = Code(name: "invalid request")
        public var description: String { name }
    }

    public var code: Code
    public var message: String
    public var underlyingError: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, underlyingError: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlyingError = underlyingError
    }

    public var description: String { message }
}

/// The result of one task in the result backend (`celery-task-meta-<id>`), as Python's `AsyncResult`.
public struct AsyncResult: Sendable {
    public let id: String
    package let backend: RedisClient

    public init(id: String, backend: RedisClient) {
        self.id = id
        self.backend = backend
    }

    package var key: String { ResultBackend.keyPrefix + id }

    /// The stored meta document, or nil while PENDING (no key).
    public func meta() async throws(CeleryClientError) -> JSONValue? {
        let reply: RESPToken
        do {
            reply = try await backend.send(RESPCommand("GET", key))
        } catch {
            throw CeleryClientError(.redis, "cannot read the result of \(id): \(error.message)", underlyingError: error)
        }
        guard let bytes = reply.bytes else { return nil }
        return try Self.parse(Array(bytes.readableBytesView), id: id)
    }

    /// The task's state: PENDING until a worker stores something.
    public func state() async throws(CeleryClientError) -> String {
        try await meta()?["status"]?.stringValue ?? TaskState.pending.rawValue
    }

    /// True once the task succeeded, failed or was revoked.
    public func ready() async throws(CeleryClientError) -> Bool {
        guard let meta = try await meta() else { return false }
        return Self.isReady(meta)
    }

    /// The ids of the tasks this one started (link callbacks, the next chain hop, groups as their members).
    public func children() async throws(CeleryClientError) -> [String] {
        guard let children = try await meta()?["children"]?.arrayValue else { return [] }
        return children.flatMap(Self.taskIDs)
    }

    /// Waits for the result: subscribes to the result's channel, then reads it, then waits for what a worker
    /// publishes there. Returns the value on SUCCESS; throws ``TaskFailure`` on FAILURE or REVOKED, and
    /// ``CeleryClientError`` with code `.timeout` when nothing is ready in time.
    public func get(timeout: Duration = .seconds(10)) async throws -> JSONValue {
        let meta = try await Self.waitForReady([self], backend: backend, timeout: timeout)[0]
        return try Self.value(of: meta, id: id)
    }

    /// Deletes the stored result (Python's `forget()`).
    public func forget() async throws(CeleryClientError) {
        do {
            try await backend.send(RESPCommand("DEL", key))
        } catch {
            throw CeleryClientError(.redis, "cannot forget \(id): \(error.message)", underlyingError: error)
        }
    }

    // MARK: - Shared with GroupResult

    package static func parse(_ bytes: [UInt8], id: String) throws(CeleryClientError) -> JSONValue {
        guard let meta = try? JSONValue(parsing: bytes), meta["status"]?.stringValue != nil else {
            throw CeleryClientError(
                .malformedResult,
                "the stored result of \(id) is not a Celery result: \(String(decoding: bytes.prefix(200), as: UTF8.self))"
            )
        }
        return meta
    }

    package static func isReady(_ meta: JSONValue) -> Bool {
        guard let status = meta["status"]?.stringValue, let state = TaskState(rawValue: status) else { return false }
        return state.isReady
    }

    /// The value of a ready meta, or its failure.
    package static func value(of meta: JSONValue, id: String) throws -> JSONValue {
        let status = meta["status"]?.stringValue ?? ""
        if status == TaskState.success.rawValue { return meta["result"] ?? .null }
        let result = meta["result"] ?? .null
        let arguments = StoredException.arguments(ofStored: result)
        throw TaskFailure(
            taskID: id,
            state: TaskState(rawValue: status) ?? .failure,
            exceptionType: result["exc_type"]?.stringValue ?? "Exception",
            exceptionModule: result["exc_module"]?.stringValue ?? "builtins",
            arguments: arguments,
            traceback: meta["traceback"]?.stringValue
        )
    }

    /// Task ids in a `children` entry: `[[id, parent], null]` or a group `[[gid, parent], [members...]]`.
    package static func taskIDs(_ entry: JSONValue) -> [String] {
        if let members = entry[1]?.arrayValue { return members.flatMap(taskIDs) }
        return entry[0]?[0]?.stringValue.map { [$0] } ?? []
    }

    /// Subscribes to every result's channel, reads them all, then waits for the rest to be published; returns the
    /// ready metas in the order given.
    package static func waitForReady(
        _ results: [AsyncResult],
        backend: RedisClient,
        timeout: Duration
    ) async throws -> [JSONValue] {
        guard !results.isEmpty else { return [] }
        let keys = results.map(\.key)
        let deadline = ContinuousClock.now + timeout
        do {
            return try await backend.withSubscription(channels: keys) { subscription in
                var ready: [String: JSONValue] = [:]
                let reply = try await backend.send(RESPCommand("MGET", keys))
                for (index, item) in (reply.array ?? []).enumerated() where index < keys.count {
                    guard let bytes = item.bytes else { continue }
                    let meta = try parse(Array(bytes.readableBytesView), id: results[index].id)
                    if isReady(meta) { ready[keys[index]] = meta }
                }
                if ready.count < keys.count {
                    let missing = keys.count - ready.count
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            try await Task.sleep(until: deadline, clock: .continuous)
                            throw CeleryClientError(
                                .timeout,
                                "no result within \(timeout) for \(missing) of \(keys.count) task(s)"
                            )
                        }
                        group.addTask { [ready] in
                            var ready = ready
                            for try await message in subscription.messages {
                                guard keys.contains(message.channel), ready[message.channel] == nil else { continue }
                                let id = String(message.channel.dropFirst(ResultBackend.keyPrefix.count))
                                let meta = try parse(Array(message.payload.readableBytesView), id: id)
                                if isReady(meta) { ready[message.channel] = meta }
                                if ready.count == keys.count { return }
                            }
                        }
                        _ = try await group.next()
                        group.cancelAll()
                    }
                    // The waiting task only told us all are ready; read them again to return them.
                    let reply = try await backend.send(RESPCommand("MGET", keys))
                    for (index, item) in (reply.array ?? []).enumerated() where index < keys.count {
                        guard let bytes = item.bytes else { continue }
                        ready[keys[index]] = try parse(Array(bytes.readableBytesView), id: results[index].id)
                    }
                }
                return try keys.map { key in
                    guard let meta = ready[key], isReady(meta) else {
                        throw CeleryClientError(.malformedResult, "the result \(key) disappeared while waiting")
                    }
                    return meta
                }
            }
        } catch let error as RedisError {
            throw CeleryClientError(.redis, "cannot wait for results: \(error.message)", underlyingError: error)
        }
    }
}

/// The results of a group, in the group's order.
public struct GroupResult: Sendable {
    /// The group id (`headers.group` of every member).
    public let id: String
    public let results: [AsyncResult]
    package let backend: RedisClient

    package init(id: String, results: [AsyncResult], backend: RedisClient) {
        self.id = id
        self.results = results
        self.backend = backend
    }

    /// Waits for every member; returns their values in order, or throws the first failure in group order.
    public func get(timeout: Duration = .seconds(10)) async throws -> [JSONValue] {
        let metas = try await AsyncResult.waitForReady(results, backend: backend, timeout: timeout)
        return try zip(results, metas).map { result, meta in try AsyncResult.value(of: meta, id: result.id) }
    }
}
