import CeleryProtocol
import CeleryRedis
import JSON
import Logging

extension Worker {
    /// Answers the messages the pop measured as larger than `maximumMessageSize` (already in the dead-letter list
    /// and not recorded in `unacked`): a log line, and a FAILURE when the task id was found. Returns the others;
    /// the oversized ones hold no prefetch credit once they are left out of what is reserved.
    package func rejectOversized(_ deliveries: [Delivery]) async -> [Delivery] {
        guard deliveries.contains(where: { $0.oversized != nil }) else { return deliveries }
        var kept: [Delivery] = []
        for delivery in deliveries {
            guard let oversized = delivery.oversized else {
                kept.append(delivery)
                continue
            }
            let limit = configuration.maximumMessageSize
            logger.error(
                "rejecting a message of \(oversized.size) bytes: larger than --max-message-size \(limit); kept unparsed in \(broker.deadLetterKey)",
                metadata: [
                    "celery.queue": "\(delivery.list)",
                    "celery.message.bytes": "\(oversized.size)",
                    "celery.task.id": "\(oversized.taskID ?? "?")",
                    "celery.task.name": "\(oversized.taskName ?? "?")",
                ]
            )
            guard let id = oversized.taskID else { continue }
            let stored = StoredException(
                type: "LimitExceeded",
                module: "kombu.exceptions",
                arguments: [
                    .string(
                        "message of \(oversized.size) bytes exceeds the worker's limit of \(limit) bytes (--max-message-size)"
                    )
                ]
            )
            results.storeResult(
                taskID: id,
                meta: backend.meta(
                    state: .failure,
                    result: stored.resultJSON,
                    traceback: stored.traceback(taskName: oversized.taskName ?? "?", hostname: configuration.hostname),
                    message: nil,
                    taskID: id
                )
            )
        }
        return kept
    }
}

extension Worker {
    /// Gives back the messages of pops whose replies were lost (see `KombuBroker.recoverLostPop`); returns the
    /// stamps that could not be checked yet.
    package func recoverLostPops(_ stamps: [String]) async -> [String] {
        var remaining: [String] = []
        for stamp in stamps {
            do {
                let restored = try await broker.recoverLostPop(stamp: stamp, holding: holdingTags)
                if restored > 0 {
                    logger.warning(
                        "gave back \(restored) message(s) whose pop reply was lost with the connection",
                        metadata: ["redis.url": "\(brokerClient.configuration.redactedURL)"]
                    )
                }
            } catch {
                remaining.append(stamp)
            }
        }
        // A connection that keeps failing could pile up stamps; past a few hundred the visibility-timeout restore
        // takes care of the oldest.
        return Array(remaining.suffix(256))
    }
}
