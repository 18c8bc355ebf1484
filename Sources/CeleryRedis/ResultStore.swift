import CeleryProtocol
import JSON
import RESP
import Redis

/// Where a worker's task results and acks go: the Redis backend's batched writer (``WriteBatcher``), or an
/// in-memory store in unit tests. Both calls return at once; the writes land with the store's next flush.
package protocol ResultStore: Sendable {
    /// Stores a task's meta under `celery-task-meta-<id>` and publishes it to the waiting clients.
    func storeResult(taskID: String, meta: JSONValue)
    /// Acks a delivery in kombu's `unacked` (after the results before it, when both live in one Redis).
    func ack(deliveryTag: String)
    /// How long results live, in seconds (0: forever); chord state gets the same.
    var resultTTL: Int { get }
}

extension WriteBatcher: ResultStore {}

/// Where the follow-up tasks a worker sends go (callbacks, chain steps, errbacks, retries): onto their queues'
/// lists, all or none.
package protocol TaskPublisher: Sendable {
    func publish(_ tasks: [OutgoingTask]) async throws(RedisError)
}

/// Publishes as kombu does: LPUSH of each envelope onto its priority list, in one MULTI/EXEC.
package struct KombuPublisher: TaskPublisher {
    package let client: RedisClient

    package init(client: RedisClient) {
        self.client = client
    }

    package func publish(_ tasks: [OutgoingTask]) async throws(RedisError) {
        let commands = tasks.map { RESPCommand("LPUSH", $0.list, RESPBytes($0.envelope())) }
        for reply in try await client.transaction(commands) { _ = try reply.get() }
    }
}
