import CeleryProtocol
import Redis

/// Where the broker, the result backend and Redis for task code live, from flags, then the environment, then
/// the default — the same variables a Python Celery deployment sets.
public struct CeleryEnvironment: Sendable {
    /// Used when nothing else names a Redis.
    public static let defaultURL = "redis://127.0.0.1:6379/0"

    /// The broker's URL: `--broker`, else `CELERY_BROKER_URL`, else `REDIS_URL`, else the default.
    public var brokerURL: String
    /// The result backend's URL: `--result-backend`, else `CELERY_RESULT_BACKEND`, else the broker's URL.
    public var resultBackendURL: String
    /// Redis for task code and `ping`: `REDIS_URL`, else the broker's URL.
    public var redisURL: String
    /// `REDIS_PASSWORD`, applied to any of the URLs that carries no password.
    public var defaultPassword: String?

    /// Resolves the URLs; `environment` is normally the process environment.
    public init(broker: String? = nil, resultBackend: String? = nil, environment: [String: String]) {
        func nonEmpty(_ key: String) -> String? {
            guard let value = environment[key], !value.isEmpty else { return nil }
            return value
        }
        brokerURL = broker ?? nonEmpty("CELERY_BROKER_URL") ?? nonEmpty("REDIS_URL") ?? Self.defaultURL
        resultBackendURL = resultBackend ?? nonEmpty("CELERY_RESULT_BACKEND") ?? brokerURL
        redisURL = broker ?? nonEmpty("REDIS_URL") ?? brokerURL
        defaultPassword = nonEmpty("REDIS_PASSWORD")
    }

    /// The broker's configuration, with `REDIS_PASSWORD` applied.
    public func brokerConfiguration() throws(RedisError) -> RedisConfiguration {
        try RedisConfiguration(url: brokerURL).withDefaultPassword(defaultPassword)
    }

    /// The result backend's configuration, with `REDIS_PASSWORD` applied.
    public func resultBackendConfiguration() throws(RedisError) -> RedisConfiguration {
        try RedisConfiguration(url: resultBackendURL).withDefaultPassword(defaultPassword)
    }

    /// The configuration for `REDIS_URL` (falling back to the broker), with `REDIS_PASSWORD` applied.
    public func redisConfiguration() throws(RedisError) -> RedisConfiguration {
        try RedisConfiguration(url: redisURL).withDefaultPassword(defaultPassword)
    }
}
