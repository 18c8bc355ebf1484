import CeleryProtocol
import CeleryRedis
import Logging
import NIOPosix
import Redis
import ServiceLifecycle

/// A Celery worker as one ServiceLifecycle `Service`, for a server (Hummingbird, Vapor) to add to its own
/// `ServiceGroup`: it owns its Redis connections, consumes until the group shuts down gracefully, and closes them.
///
/// ```swift
/// let celery = try WorkerService(
///     configuration: .init(environment: CeleryEnvironment(environment: ProcessInfo.processInfo.environment),
///                          worker: WorkerConfiguration(queues: ["reports"], concurrency: 8)),
///     registry: registry,
///     logger: logger
/// )
/// let group = ServiceGroup(services: [app, celery], gracefulShutdownSignals: [.sigterm], logger: logger)
/// ```
public struct WorkerService: Service {
    /// Where Redis is and how the worker consumes.
    public struct Configuration: Sendable {
        /// The broker, result backend and task Redis URLs (`CeleryEnvironment(environment:)` reads the variables a
        /// Celery deployment sets: `CELERY_BROKER_URL`, `CELERY_RESULT_BACKEND`, `REDIS_URL`, `REDIS_PASSWORD`).
        public var environment: CeleryEnvironment
        /// Queues, concurrency, acks, limits: ``WorkerConfiguration``'s documented defaults unless set.
        public var worker: WorkerConfiguration

        /// A configuration from Redis URLs and the worker's settings.
        public init(environment: CeleryEnvironment, worker: WorkerConfiguration) {
            self.environment = environment
            self.worker = worker
        }
    }

    /// The worker itself: readiness (`isReady`, `isConsuming`), its events dispatcher, `stop()`.
    public let worker: Worker
    private let clients: [RedisClient]

    /// Makes the worker and its Redis clients; nothing connects before `run()`.
    /// - Throws: ``RedisError`` when a URL cannot be used (its message names the URL's problem, not its password).
    public init(
        configuration: Configuration,
        registry: TaskRegistry,
        metrics: WorkerMetrics = WorkerMetrics(),
        logger: Logger
    ) throws(RedisError) {
        let brokerConfiguration = try configuration.environment.brokerConfiguration()
        let backendConfiguration = try configuration.environment.resultBackendConfiguration()
        let redisConfiguration = try configuration.environment.redisConfiguration()
        // The broker's and the backend's connections share one event loop, and the worker's fetch loop and result
        // batcher run on it (see `Worker.init`'s broker): a task's trips through Redis then cost no hand-over
        // between threads.
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let broker = RedisClient(configuration: brokerConfiguration, eventLoopGroup: loop, logger: logger)
        let backend =
            backendConfiguration == brokerConfiguration
            ? broker : RedisClient(configuration: backendConfiguration, eventLoopGroup: loop, logger: logger)
        let redis =
            redisConfiguration == brokerConfiguration
            ? broker : RedisClient(configuration: redisConfiguration, logger: logger)
        var clients = [broker]
        if backend !== broker { clients.append(backend) }
        if redis !== broker { clients.append(redis) }
        self.clients = clients
        self.worker = Worker(
            configuration: configuration.worker,
            registry: registry,
            broker: broker,
            backend: backend,
            redis: redis,
            metrics: metrics,
            logger: logger
        )
    }

    /// Consumes until graceful shutdown (a warm shutdown: running tasks finish, fetched ones go back), then closes
    /// the Redis connections. Cancellation is a cold shutdown.
    public func run() async throws {
        let outcome: Result<Void, any Error>
        do {
            try await worker.run()
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        for client in clients { await client.close() }
        try outcome.get()
    }
}
