import Logging
import Redis
import ServiceLifecycle

/// Celery beat as one ServiceLifecycle `Service`, for a server (Hummingbird, Vapor) to add to its own
/// `ServiceGroup`: it owns its Redis connection, pushes the schedule's tasks until the group shuts down (giving up
/// the leader lock), and closes the connection.
///
/// ```swift
/// let beat = BeatService(
///     configuration: .init(
///         redis: try RedisConfiguration(url: "redis://127.0.0.1:6379/0"),
///         schedule: try BeatScheduleFile.load(path: "beat.yaml"),
///         beat: BeatConfiguration(origin: "beat@web-1", token: "web-1:\(pid)")
///     ),
///     logger: logger
/// )
/// ```
public struct BeatService: Service {
    /// Where Redis is, what to schedule and how beat runs.
    public struct Configuration: Sendable {
        /// The broker's Redis: where tasks are pushed and beat keeps its state and lock.
        public var redis: RedisConfiguration
        /// The entries (a YAML or JSON schedule file, ``BeatScheduleFile/load(path:)``).
        public var schedule: BeatScheduleFile
        /// Lock timeout, starting deadline, history, node name: ``BeatConfiguration``'s documented defaults.
        public var beat: BeatConfiguration
        /// Prefixed to every key beat keeps in Redis; beats sharing a schedule share it. Default
        /// `swift-celery:beat:`.
        public var keyPrefix: String
        /// Reads the schedule again (on `requestReload()`), e.g. from its file; by default the same schedule.
        public var reload: @Sendable () throws(BeatError) -> BeatScheduleFile

        /// A configuration from the broker's Redis, a schedule and beat's settings.
        public init(
            redis: RedisConfiguration,
            schedule: BeatScheduleFile,
            beat: BeatConfiguration,
            keyPrefix: String = "swift-celery:beat:"
        ) {
            self.init(redis: redis, schedule: schedule, beat: beat, keyPrefix: keyPrefix) { () throws(BeatError) in
                schedule
            }
        }

        /// A configuration whose schedule `reload` reads again on `requestReload()` (SIGHUP in `swift-celery beat`).
        public init(
            redis: RedisConfiguration,
            schedule: BeatScheduleFile,
            beat: BeatConfiguration,
            keyPrefix: String = "swift-celery:beat:",
            reload: @escaping @Sendable () throws(BeatError) -> BeatScheduleFile
        ) {
            self.redis = redis
            self.schedule = schedule
            self.beat = beat
            self.keyPrefix = keyPrefix
            self.reload = reload
        }
    }

    /// The scheduler itself: leadership (`isLeader`), the schedule in use, `requestReload()`.
    public let scheduler: BeatScheduler
    private let client: RedisClient

    /// Makes the scheduler and its Redis client; nothing connects before `run()`.
    public init(configuration: Configuration, logger: Logger) {
        let client = RedisClient(configuration: configuration.redis, logger: logger)
        self.client = client
        self.scheduler = BeatScheduler(
            configuration: configuration.beat,
            schedule: configuration.schedule,
            state: BeatRedisState(client: client, prefix: configuration.keyPrefix),
            logger: logger,
            reload: configuration.reload
        )
    }

    /// Schedules until graceful shutdown (or cancellation), then closes the Redis connection.
    public func run() async throws {
        let outcome: Result<Void, any Error>
        do {
            try await scheduler.run()
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        await client.close()
        try outcome.get()
    }
}
