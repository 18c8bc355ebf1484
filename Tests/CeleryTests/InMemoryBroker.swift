import DequeModule
import Redis
import Synchronization

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// kombu's queue semantics in memory: LPUSH in, RPOP out, every popped message recorded as unacked until acked
/// or given back (to the consuming end, as kombu's restore does).
final class InMemoryBroker: Broker {
    private struct State {
        var lists: [String: Deque<[UInt8]>] = [:]
        var unacked: [String: Delivery] = [:]
        var deadLetters: [[UInt8]] = []
        var declared: Set<String> = []
        /// Parked ETA messages: due time, the list they go back to, the envelope.
        var parked: [ParkedEntry] = []
        /// The crash guard's running marks: tag → worker.
        var running: [String: String] = [:]
        var crashes: [String: Int] = [:]
        var markWrites = 0
        var markDelay = Duration.zero
    }

    private let state = Mutex(State())

    var deadLetterKey: String { "memory:dead-letter" }

    /// LPUSH, as a client sends.
    func push(_ envelope: [UInt8], to list: String = "q") {
        state.withLock { $0.lists[list, default: []].prepend(envelope) }
    }

    func count(_ list: String = "q") -> Int { state.withLock { $0.lists[list]?.count ?? 0 } }
    var unackedTags: Set<String> { state.withLock { Set($0.unacked.keys) } }
    var declared: Set<String> { state.withLock { $0.declared } }
    var parkedCount: Int { state.withLock { $0.parked.count } }

    var runningTags: Set<String> { state.withLock { Set($0.running.keys) } }
    /// How many `markRunning` calls wrote marks.
    var markWrites: Int { state.withLock { $0.markWrites } }
    /// How long a `markRunning` call takes, as a round trip to Redis would.
    var markDelay: Duration {
        get { state.withLock { $0.markDelay } }
        set { state.withLock { $0.markDelay = newValue } }
    }
    var deadLetters: [[UInt8]] { state.withLock { $0.deadLetters } }

    /// What the result store's ack does to kombu's `unacked` (and to the crash guard's marks).
    func ack(_ tag: String) {
        state.withLock {
            _ = $0.unacked.removeValue(forKey: tag)
            _ = $0.running.removeValue(forKey: tag)
            _ = $0.crashes.removeValue(forKey: tag)
        }
    }

    func declare(queues: [String]) async throws(RedisError) {
        state.withLock { $0.declared.formUnion(queues) }
    }

    func startPop(lists: [String], limit: Int, stamp: String) async throws(RedisError) -> PendingPop {
        let popped = state.withLock { state -> [Delivery] in
            var popped: [Delivery] = []
            for list in lists {
                while popped.count < limit, let envelope = state.lists[list]?.popLast() {
                    guard let tag = (try? TaskMessage.deliveryTag(in: envelope)) ?? nil else {
                        state.deadLetters.append(envelope)
                        continue
                    }
                    let delivery = Delivery(list: list, envelope: envelope, tag: tag)
                    state.unacked[tag] = delivery
                    popped.append(delivery)
                }
            }
            return popped
        }
        return PendingPop { popped }
    }

    func blockingPop(lists: [String], timeout: Duration) async throws(RedisError) -> Delivery? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let delivery = try await startPop(lists: lists, limit: 1, stamp: "").deliveries().first {
                return delivery
            }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return nil
    }

    func closeBlockingPop() async {}

    func restore(_ delivery: Delivery, deliveryTag: String, atBack: Bool) async throws(RedisError) -> Bool {
        state.withLock { state in
            guard state.unacked.removeValue(forKey: deliveryTag) != nil else { return false }
            state.running.removeValue(forKey: deliveryTag)
            if atBack {
                state.lists[delivery.list, default: []].prepend(delivery.envelope)
            } else {
                state.lists[delivery.list, default: []].append(delivery.envelope)
            }
            return true
        }
    }

    func clearRunning(_ tag: String) async throws(RedisError) {
        state.withLock { _ = $0.running.removeValue(forKey: tag) }
    }

    func crashCount(_ tag: String) async throws(RedisError) -> Int {
        state.withLock { $0.crashes[tag] ?? 0 }
    }

    /// Sets a message's crash count, as restores after crashes would.
    func setCrashCount(_ count: Int, for tag: String) {
        state.withLock { $0.crashes[tag] = count }
    }

    func restoreExpired(olderThan cutoff: Double, holding: Set<String>) async throws(RedisError) -> ExpiredRestore {
        ExpiredRestore()
    }

    func markRunning(_ tags: [String], worker: String) async throws(RedisError) {
        let delay = markDelay
        if delay > .zero { try? await Task.sleep(for: delay) }
        state.withLock { state in
            state.markWrites += 1
            for tag in tags { state.running[tag] = worker }
        }
    }
    func refresh(_ tags: Set<String>) async throws(RedisError) {}
    func recoverLostPop(stamp: String, holding: Set<String>) async throws(RedisError) -> Int { 0 }

    func deadLetter(_ envelope: [UInt8]) async throws(RedisError) {
        state.withLock { $0.deadLetters.append(envelope) }
    }

    func park(_ messages: [ParkedMessage]) async throws(RedisError) -> [Bool] {
        state.withLock { state in
            messages.map { message in
                guard state.unacked.removeValue(forKey: message.tag) != nil else { return false }
                state.parked.append(ParkedEntry(due: message.due, list: message.list, envelope: message.envelope))
                return true
            }
        }
    }

    func unpark(
        queues: [String],
        until: Double,
        limit: Int
    ) async throws(RedisError) -> (moved: Int, more: Bool, earliest: Double?) {
        state.withLock { state in
            let wanted = Set(queues)
            let (due, rest) = state.parked.sorted { $0.due < $1.due }.reduce(into: ([ParkedEntry](), [ParkedEntry]())) {
                if $1.due <= until, wanted.contains(KombuPriorityLists.split(list: $1.list).queue) {
                    $0.0.append($1)
                } else {
                    $0.1.append($1)
                }
            }
            for entry in due.reversed() { state.lists[entry.list, default: []].append(entry.envelope) }
            state.parked = rest
            let earliest = rest.filter { wanted.contains(KombuPriorityLists.split(list: $0.list).queue) }.first?.due
            return (due.count, false, earliest)
        }
    }

    func findParked(ids: [String], queues: [String]) async throws(RedisError) -> [ParkedEntry] {
        state.withLock { state in
            state.parked.filter { entry in
                let text = String(decoding: entry.envelope, as: UTF8.self)
                return ids.contains { text.contains("\"\($0)\"") }
            }
        }
    }

    func parked(queues: [String], limit: Int) async throws(RedisError) -> [ParkedEntry] {
        state.withLock { state in
            let wanted = Set(queues)
            return Array(
                state.parked.filter { wanted.contains(KombuPriorityLists.split(list: $0.list).queue) }
                    .sorted { $0.due < $1.due }.prefix(limit)
            )
        }
    }
}
