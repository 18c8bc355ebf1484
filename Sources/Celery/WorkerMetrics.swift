import CeleryProtocol
import CeleryRedis
import CoreMetrics
import Prometheus
import Synchronization

/// The worker's metrics, through swift-metrics (so any backend works; `swift-celery worker --metrics-port`
/// exports them in Prometheus' format):
///
/// | metric | type | labels |
/// |---|---|---|
/// | `celery_tasks_received_total` | counter | `task` |
/// | `celery_tasks_succeeded_total` | counter | `task` |
/// | `celery_tasks_failed_total` | counter | `task` |
/// | `celery_tasks_retried_total` | counter | `task` |
/// | `celery_task_runtime_seconds` | histogram | `task` |
/// | `celery_tasks_active` | gauge | |
/// | `celery_queue_length` | gauge (read at scrape) | `queue` |
/// | `celery_prefetch_in_use` | gauge (read at scrape) | |
/// | `celery_redis_reconnects_total` | counter | |
public final class WorkerMetrics: Sendable {
    package let factory: any MetricsFactory
    /// Where the metrics are kept when they are exported in Prometheus' format.
    public let registry: PrometheusCollectorRegistry?
    private let reconnectsSeen = Mutex<Int>(0)

    /// Metrics made by `factory`; by default the one `MetricsSystem` was bootstrapped with.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        self.registry = nil
    }

    /// Metrics kept in a new Prometheus registry. With `bootstrap` (once per process) the registry also becomes
    /// `MetricsSystem`'s backend, so metrics a handler records through swift-metrics are served too.
    public static func prometheus(bootstrap: Bool = true) -> WorkerMetrics {
        let metrics = WorkerMetrics(registry: PrometheusCollectorRegistry())
        if bootstrap { MetricsSystem.bootstrap(metrics.factory) }
        return metrics
    }

    /// Metrics kept in `registry` for a Prometheus endpoint (`MonitoringServer`).
    public init(registry: PrometheusCollectorRegistry) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["celery_task_runtime_seconds"] = Self.runtimeBuckets
        self.factory = factory
        self.registry = registry
    }

    /// The histogram buckets for `celery_task_runtime_seconds`.
    public static let runtimeBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
        .seconds(10), .seconds(30), .seconds(60), .seconds(300),
    ]

    package func received(_ task: String) { counter("celery_tasks_received_total", task: task).increment() }
    package func succeeded(_ task: String) { counter("celery_tasks_succeeded_total", task: task).increment() }
    package func failed(_ task: String) { counter("celery_tasks_failed_total", task: task).increment() }
    package func retried(_ task: String) { counter("celery_tasks_retried_total", task: task).increment() }
    /// ETA messages moved to Redis's parked sets, and moved back when due (Worker+Parking.swift).
    package func parked() { CoreMetrics.Counter(label: "celery_eta_parked_total", factory: factory).increment() }
    package func unparked(_ count: Int) {
        CoreMetrics.Counter(label: "celery_eta_unparked_total", factory: factory).increment(by: count)
    }

    /// How long a handler ran (success or not).
    package func runtime(_ task: String, _ duration: Duration) {
        let nanoseconds =
            duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
        CoreMetrics.Timer(label: "celery_task_runtime_seconds", dimensions: [("task", task)], factory: factory)
            .recordNanoseconds(nanoseconds)
    }

    /// Gauges read when metrics are collected.
    package func update(active: Int, prefetchInUse: Int, queueLengths: [String: Int]?, redisReconnects: Int) {
        Meter(label: "celery_tasks_active", factory: factory).set(active)
        Meter(label: "celery_prefetch_in_use", factory: factory).set(prefetchInUse)
        for (queue, length) in queueLengths ?? [:] {
            Meter(label: "celery_queue_length", dimensions: [("queue", queue)], factory: factory).set(length)
        }
        let increase = reconnectsSeen.withLock { seen -> Int in
            defer { seen = max(seen, redisReconnects) }
            return max(0, redisReconnects - seen)
        }
        // Created even at zero so the series exists from the first scrape.
        CoreMetrics.Counter(label: "celery_redis_reconnects_total", factory: factory).increment(by: increase)
    }

    private func counter(_ label: String, task: String) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: label, dimensions: [("task", task)], factory: factory)
    }
}
