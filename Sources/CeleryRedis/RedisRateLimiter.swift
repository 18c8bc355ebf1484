import CeleryProtocol
import JSON
import RESP
import Redis

/// A rate limiter shared by every process that uses the same Redis: at most `limit` calls per `window` for a key,
/// over a sliding window (no double bursts at window edges). Handlers reach it as `context.rateLimiter`.
///
/// ```swift
/// let decision = try await context.rateLimiter.attempt("api:github", limit: 100, window: .seconds(60))
/// guard decision.allowed else { throw TaskRetry(countdown: decision.retryAfter) }
/// ```
public struct RedisRateLimiter: Sendable {
    /// The answer for one attempt.
    public struct Decision: Sendable, Hashable {
        /// Whether this call may go ahead (it then counts against the limit).
        public var allowed: Bool
        /// Calls left in the current window after this one.
        public var remaining: Int
        /// How long until the oldest counted call leaves the window, freeing a slot (zero when one is free).
        public var retryAfter: Duration
        /// How long until the window is empty again.
        public var resetAfter: Duration
    }

    package let client: RedisClient
    /// Prefixed to every key, so limiter keys are easy to find and cannot collide with other data.
    public var keyPrefix: String

    public init(client: RedisClient, keyPrefix: String = "swift-celery:ratelimit:") {
        self.client = client
        self.keyPrefix = keyPrefix
    }

    /// KEYS[1]: the ZSET of call times (ms). ARGV: limit, window ms, a unique member. Uses the server's clock so
    /// every worker agrees. Returns {allowed, remaining, retry_after_ms, reset_after_ms}.
    package static let script = RedisScript(
        """
        local limit = tonumber(ARGV[1])
        local window = tonumber(ARGV[2])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
        local count = redis.call('ZCARD', KEYS[1])
        local allowed = 0
        if count < limit then
          redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
          count = count + 1
          allowed = 1
        end
        redis.call('PEXPIRE', KEYS[1], window)
        local retry = 0
        local reset = 0
        local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
        local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
        if oldest[2] then
          if count >= limit then retry = math.max(0, tonumber(oldest[2]) + window - now) end
          reset = math.max(0, tonumber(newest[2]) + window - now)
        end
        return {allowed, math.max(0, limit - count), retry, reset}
        """
    )

    /// Counts one call against `key` if the limit allows it.
    /// - Throws: ``RedisError`` when Redis cannot be reached (the caller decides: fail, or retry later).
    public func attempt(_ key: String, limit: Int, window: Duration) async throws -> Decision {
        precondition(limit > 0, "a rate limit must allow at least one call")
        let windowMilliseconds = max(
            1,
            Int(window.components.seconds * 1000 + window.components.attoseconds / 1_000_000_000_000_000)
        )
        let reply = try await client.evaluate(
            Self.script,
            keys: [keyPrefix + key],
            arguments: [String(limit), String(windowMilliseconds), OutgoingTask.newID()]
        )
        guard let values = reply.array?.compactMap(\.int), values.count == 4 else {
            throw RedisError(.unexpectedReply, "the rate limiter script answered \(reply)")
        }
        return Decision(
            allowed: values[0] == 1,
            remaining: values[1],
            retryAfter: .milliseconds(values[2]),
            resetAfter: .milliseconds(values[3])
        )
    }
}

/// JSON values in Redis for handlers (`context.cache`): read, write with a TTL, count.
public struct RedisJSONCache: Sendable {
    package let client: RedisClient
    /// Prefixed to every key.
    public var keyPrefix: String

    public init(client: RedisClient, keyPrefix: String = "swift-celery:cache:") {
        self.client = client
        self.keyPrefix = keyPrefix
    }

    /// The value stored under `key`, nil if there is none.
    /// - Throws: ``RedisError`` if Redis cannot be reached; `JSONError` if the stored value is not JSON.
    public func get(_ key: String) async throws -> JSONValue? {
        let reply = try await client.send(RESPCommand("GET", keyPrefix + key))
        guard let bytes = reply.bytes else { return nil }
        return try JSONValue(parsing: Array(bytes.readableBytesView))
    }

    /// Stores `value` under `key`, expiring after `ttl` (nil: never).
    public func set(_ key: String, _ value: JSONValue, ttl: Duration? = nil) async throws {
        var command = RESPCommand("SET", keyPrefix + key, RESPBytes(try value.serialize()))
        if let ttl {
            let milliseconds = ttl.components.seconds * 1000 + ttl.components.attoseconds / 1_000_000_000_000_000
            command.append("PX")
            command.append(Int(max(1, milliseconds)))
        }
        try await client.send(command)
    }

    /// Adds `amount` to the integer under `key` (0 when absent) and returns the new value.
    @discardableResult
    public func increment(_ key: String, by amount: Int = 1) async throws -> Int {
        let reply = try await client.send(RESPCommand("INCRBY", keyPrefix + key, amount))
        guard let value = reply.int else { throw RedisError(.unexpectedReply, "INCRBY answered \(reply)") }
        return value
    }

    /// Removes `key`; true if it existed.
    @discardableResult
    public func delete(_ key: String) async throws -> Bool {
        try await client.send(RESPCommand("DEL", keyPrefix + key)).int == 1
    }

    /// The cached value, or `compute()`'s result stored with `ttl` when there is none.
    public func value(
        _ key: String,
        ttl: Duration?,
        orCompute compute: () async throws -> JSONValue
    ) async throws -> JSONValue {
        if let cached = try await get(key) { return cached }
        let fresh = try await compute()
        try await set(key, fresh, ttl: ttl)
        return fresh
    }
}
