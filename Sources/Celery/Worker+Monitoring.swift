import CeleryProtocol
import CeleryRedis
import JSON
import RESP

/// The task lifecycle as monitors see it: each point feeds the metrics and, when enabled, the task events.
extension Worker {
    /// A message was fetched and decoded as a task (ETA messages too, before they wait).
    package func noteReceived(_ message: TaskMessage) {
        metrics.received(message.taskName)
        events.taskReceived(message)
    }

    /// The handler is about to run. Each call is paired with one `noteFinished()`.
    package func noteStarted(_ message: TaskMessage) {
        events.taskStarted(id: message.id)
    }

    /// The handler that started has returned, thrown or been abandoned.
    package func noteFinished(_ message: TaskMessage, runtime: Duration) {
        metrics.runtime(message.taskName, runtime)
        events.taskFinished()
    }

    package func noteSucceeded(_ message: TaskMessage, result: JSONValue, runtime: Duration) {
        metrics.succeeded(message.taskName)
        events.taskSucceeded(id: message.id, result: result, runtime: runtime)
    }

    package func noteFailed(_ message: TaskMessage, _ error: StoredException) {
        metrics.failed(message.taskName)
        events.taskFailed(
            id: message.id,
            exception: error.repr,
            traceback: error.traceback(taskName: message.taskName, hostname: configuration.hostname)
        )
    }

    package func noteRetried(_ message: TaskMessage, _ cause: StoredException?) {
        metrics.retried(message.taskName)
        let exception = cause?.repr ?? "Retry()"
        events.taskRetried(
            id: message.id,
            exception: exception,
            traceback: cause?.traceback(taskName: message.taskName, hostname: configuration.hostname)
        )
    }

    /// True while the worker consumes: ready, not shutting down, and its last fetch from Redis succeeded.
    public var isConsuming: Bool { isReady && fetchHealthy.load(ordering: .relaxed) }

    /// Reads the gauges (queue lengths, prefetch in use, active tasks, Redis reconnects) into the metrics; called
    /// before each scrape. Queue lengths keep their last value while Redis cannot be reached.
    public func collectMetrics() async {
        var lengths: [String: Int]?
        let lists = configuration.queues.map { queue in (queue, KombuLayout.lists(queues: [queue])) }
        if let replies = try? await brokerClient.pipeline(
            lists.flatMap { $0.1 }.map { RESPCommand("LLEN", $0) }
        ) {
            var values = replies.map { (try? $0.get())?.int ?? 0 }[...]
            var result: [String: Int] = [:]
            for (queue, names) in lists {
                result[queue] = values.prefix(names.count).reduce(0, +)
                values = values.dropFirst(names.count)
            }
            lengths = result
        }
        var reconnects = await brokerClient.reconnectCount
        if backendClient !== brokerClient { reconnects += await backendClient.reconnectCount }
        metrics.update(
            active: events.active,
            prefetchInUse: machine.withLock { $0.holding.count },
            queueLengths: lengths,
            redisReconnects: reconnects
        )
    }
}
