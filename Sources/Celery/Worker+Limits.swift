import JSON
import Logging

extension Worker {
    /// Answers the messages the pop measured as larger than `maximumMessageSize` (already in the dead-letter list
    /// and not recorded in `unacked`): a log line, and a FAILURE when the task id was found. Returns the others
    /// and frees the oversized ones' prefetch credit.
    func rejectOversized(_ deliveries: [Delivery]) async -> [Delivery] {
        guard deliveries.contains(where: { $0.oversized != nil }) else { return deliveries }
        var kept: [Delivery] = []
        for delivery in deliveries {
            guard let oversized = delivery.oversized else {
                kept.append(delivery)
                continue
            }
            gate.release(1)
            let limit = configuration.maximumMessageSize
            logger.error(
                "rejecting a message of \(oversized.size) bytes: larger than --max-message-size \(limit); kept unparsed in \(broker.layout.deadLetterKey)",
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
            batcher.storeResult(
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
