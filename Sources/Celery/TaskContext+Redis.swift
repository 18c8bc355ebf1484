import CeleryProtocol
import CeleryRedis

extension TaskContext {
    /// A Redis-backed rate limiter on the worker's shared connection.
    public var rateLimiter: RedisRateLimiter { RedisRateLimiter(client: redis) }
    /// JSON cache helpers on the worker's shared connection.
    public var cache: RedisJSONCache { RedisJSONCache(client: redis) }
}
