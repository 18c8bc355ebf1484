import CeleryProtocol
import Redis
import Synchronization

/// The queue side of a broker as the worker's consumer uses it: kombu's Redis lists (``KombuBroker``), or an
/// in-memory broker in unit tests. Every message handed out is recorded as unacked until acked (through the
/// ``ResultStore``) or given back.
package protocol Broker: Sendable {
    /// Where messages no worker can decode are kept, for log lines.
    var deadLetterKey: String { get }
    /// Makes the queues known (kombu's bindings), so Python clients route to them.
    func declare(queues: [String]) async throws(RedisError)
    /// Starts an atomic pop of up to `limit` messages, the first lists first; returns before they arrive.
    func startPop(lists: [String], limit: Int, stamp: String) async throws(RedisError) -> PendingPop
    /// Waits up to `timeout` for one message (kombu's BRPOP), then records it.
    func blockingPop(lists: [String], timeout: Duration) async throws(RedisError) -> Delivery?
    /// Releases what `blockingPop` holds (its connection), after an error or at the end.
    func closeBlockingPop() async
    /// Gives a message that did not run back to its list, marked redelivered: at the consuming end, or at the back
    /// (`atBack`, kombu's `reject(requeue=True)`).
    @discardableResult
    func restore(_ delivery: Delivery, deliveryTag: String, atBack: Bool) async throws(RedisError) -> Bool
    /// Gives back what dead workers left unacked longer than the visibility timeout, except the messages the
    /// crash guard claims (running each time their worker died, too many times), which it returns.
    func restoreExpired(olderThan cutoff: Double, holding: Set<String>) async throws(RedisError) -> ExpiredRestore
    /// Marks acks-late messages as running: their handlers are about to start (the crash guard's record).
    func markRunning(_ tags: [String], worker: String) async throws(RedisError)
    /// Removes a message's running mark before its ack.
    func clearRunning(_ tag: String) async throws(RedisError)
    /// How many times a message was running when its worker died.
    func crashCount(_ tag: String) async throws(RedisError) -> Int
    /// Marks the messages this worker holds as alive, so no visibility restore takes them.
    func refresh(_ tags: Set<String>) async throws(RedisError)
    /// Gives back the messages of a pop whose reply was lost; returns how many.
    func recoverLostPop(stamp: String, holding: Set<String>) async throws(RedisError) -> Int
    /// Keeps a copy of a message that cannot run.
    func deadLetter(_ envelope: [UInt8]) async throws(RedisError)
    /// Moves fetched ETA messages from `unacked` to their queue's parked set, in one atomic step; for each, false
    /// when it was no longer in `unacked` (a visibility restore gave it back meanwhile) and so was not parked.
    func park(_ messages: [ParkedMessage]) async throws(RedisError) -> [Bool]
    /// Moves the parked messages of `queues` due by `until` (Unix seconds; at most `limit` a queue) back to the
    /// consuming end of their lists; returns how many, whether more are due, and the earliest due time left.
    func unpark(
        queues: [String],
        until: Double,
        limit: Int
    ) async throws(RedisError)
        -> (moved: Int, more: Bool, earliest: Double?)
    /// The parked messages of `queues` whose envelopes name one of `ids` (a scan of the parked sets).
    func findParked(ids: [String], queues: [String]) async throws(RedisError) -> [ParkedEntry]
    /// The first `limit` parked messages of `queues`, earliest first.
    func parked(queues: [String], limit: Int) async throws(RedisError) -> [ParkedEntry]
}

/// What a visibility-timeout restore did.
package struct ExpiredRestore: Sendable {
    /// How many messages went back to their queues.
    package var restored = 0
    /// The messages the crash guard claimed: still in `unacked`, under a fresh score, for the caller to fail.
    package var claimed: [CrashedDelivery] = []

    package init(restored: Int = 0, claimed: [CrashedDelivery] = []) {
        self.restored = restored
        self.claimed = claimed
    }
}

/// A message that was running when its worker died `crashes` times.
package struct CrashedDelivery: Sendable {
    package var delivery: Delivery
    package var crashes: Int

    package init(delivery: Delivery, crashes: Int) {
        self.delivery = delivery
        self.crashes = crashes
    }
}

/// A pop on its way: `deliveries()` waits for what it brought.
package struct PendingPop: Sendable {
    private let wait: @Sendable () async throws(RedisError) -> [Delivery]

    package init(_ wait: @escaping @Sendable () async throws(RedisError) -> [Delivery]) {
        self.wait = wait
    }

    package func deliveries() async throws(RedisError) -> [Delivery] {
        try await wait()
    }
}

/// The dedicated connection of kombu's BRPOP (a blocking command holds its connection).
package final class BlockingConnection: Sendable {
    private let connection = Mutex<RedisConnection?>(nil)

    package init() {}

    /// The open connection, made on `client` when there is none or it closed.
    package func get(from client: RedisClient) async throws(RedisError) -> RedisConnection {
        if let open = connection.withLock({ $0 }), open.isActive { return open }
        let made = try await client.makeConnection()
        connection.withLock { $0 = made }
        return made
    }

    package func close() async {
        let open = connection.withLock { connection in
            defer { connection = nil }
            return connection
        }
        await open?.close()
    }
}

extension Broker {
    /// Gives a message that did not run back to the consuming end of its list, marked redelivered.
    @discardableResult
    package func restore(_ delivery: Delivery, deliveryTag: String) async throws(RedisError) -> Bool {
        try await restore(delivery, deliveryTag: deliveryTag, atBack: false)
    }
}
