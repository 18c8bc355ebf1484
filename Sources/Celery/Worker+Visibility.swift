import CeleryProtocol
import CeleryRedis
import JSON

extension Worker {
    /// Acks a message (batched) and stops refreshing its `unacked_index` score.
    package func acknowledge(_ tag: String) {
        machine.withLock { $0.acknowledged(tag) }
        results.ack(deliveryTag: tag)
    }

    /// How often the scores of held messages are refreshed: well inside the visibility timeout.
    package var refreshInterval: Duration {
        min(max(configuration.visibilityTimeout / 4, .milliseconds(250)), .seconds(30))
    }

    /// How often expired messages of dead workers are looked for (kombu: about every 100 s).
    package var restoreInterval: Duration {
        min(max(configuration.visibilityTimeout / 2, .seconds(1)), .seconds(60))
    }

    /// Until shutdown: refresh the scores of what this worker holds, and restore what dead workers left.
    package func visibilityLoop() async {
        let clock = ContinuousClock()
        var nextRestore = clock.now
        var nextRefresh = clock.now + refreshInterval
        while !isStopping {
            let now = clock.now
            if now >= nextRefresh {
                nextRefresh = now + refreshInterval
                do {
                    try await broker.refresh(holdingTags)
                } catch {
                    logger.warning("cannot refresh held messages in unacked_index", metadata: ["error": "\(error)"])
                }
            }
            if now >= nextRestore {
                nextRestore = now + restoreInterval
                let timeout = configuration.visibilityTimeout
                let cutoff =
                    CeleryTimestamp.now().secondsSince1970 - Double(timeout.components.seconds)
                    - Double(timeout.components.attoseconds) / 1e18
                do {
                    let report = try await broker.restoreExpired(olderThan: cutoff, holding: holdingTags)
                    if report.restored > 0 {
                        logger.info("restored \(report.restored) message(s) past the visibility timeout")
                    }
                    for crashed in report.claimed { await failCrashed(crashed) }
                } catch {
                    logger.warning("visibility-timeout restore failed", metadata: ["error": "\(error)"])
                }
            }
            // Until the next refresh or restore is due, or shutdown.
            await visibilityStop.wait(for: max(.zero, min(nextRefresh, nextRestore) - clock.now))
        }
    }
}
