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
    /// The broker's Sentinel master name when its `sentinel://` URL has no `master_name`:
    /// `CELERY_BROKER_MASTER_NAME` (kombu's `broker_transport_options={'master_name': ...}`).
    public var brokerMasterName: String?
    /// The result backend's Sentinel master name when its URL has none: `CELERY_RESULT_BACKEND_MASTER_NAME`, else
    /// the broker's (Celery's `result_backend_transport_options`).
    public var resultBackendMasterName: String?
    /// `REDIS_SENTINEL_PASSWORD`, the sentinels' password for `sentinel://` URLs without `sentinel_password`
    /// (kombu's `sentinel_kwargs={'password': ...}`).
    public var defaultSentinelPassword: String?

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
        brokerMasterName = nonEmpty("CELERY_BROKER_MASTER_NAME")
        resultBackendMasterName = nonEmpty("CELERY_RESULT_BACKEND_MASTER_NAME") ?? brokerMasterName
        defaultSentinelPassword = nonEmpty("REDIS_SENTINEL_PASSWORD")
    }

    /// The broker's configuration, with `REDIS_PASSWORD` and the Sentinel defaults applied.
    public func brokerConfiguration() throws(RedisError) -> RedisConfiguration {
        try configuration(brokerURL, masterName: brokerMasterName)
    }

    /// The result backend's configuration, with `REDIS_PASSWORD` and the Sentinel defaults applied.
    public func resultBackendConfiguration() throws(RedisError) -> RedisConfiguration {
        try configuration(resultBackendURL, masterName: resultBackendMasterName)
    }

    /// The configuration for `REDIS_URL` (falling back to the broker), with `REDIS_PASSWORD` and the Sentinel
    /// defaults applied.
    public func redisConfiguration() throws(RedisError) -> RedisConfiguration {
        try configuration(redisURL, masterName: brokerMasterName)
    }

    private func configuration(_ url: String, masterName: String?) throws(RedisError) -> RedisConfiguration {
        let configuration = try RedisConfiguration(url: url)
            .withDefaultPassword(defaultPassword)
            .withDefaultMasterName(masterName)
            .withDefaultSentinelPassword(defaultSentinelPassword)
        if let sentinel = configuration.sentinel, sentinel.masterName == nil {
            throw RedisError(
                .invalidURL,
                "invalid Redis URL: a sentinel:// URL needs the master's name: add ?master_name=NAME or set CELERY_BROKER_MASTER_NAME"
            )
        }
        return configuration
    }
}
