import CeleryProtocol
import JSON
import RESP
import Redis

extension KombuBroker {
    /// Gives back the messages of a pop whose reply never arrived. The pop script is atomic, so when Redis ran it
    /// the messages are recorded in `unacked` with the score `stamp` (this worker's clock at the call, to the
    /// microsecond) and nobody holds them; without this they would wait for the visibility timeout (an hour by
    /// default). Returns how many went back to their lists (marked redelivered, as kombu restores them).
    package func recoverLostPop(stamp: String, holding: Set<String>) async throws(RedisError) -> Int {
        let reply = try await client.send(
            RESPCommand("ZRANGE", layout.unackedIndexKey, stamp, stamp, "BYSCORE", "LIMIT", 0, 10_000)
        )
        var restored = 0
        for tag in reply.array?.compactMap(\.string) ?? [] where !holding.contains(tag) {
            let stored = try await client.send(RESPCommand("HGET", layout.unackedKey, tag))
            guard let bytes = stored.bytes,
                let parts = (try? JSONValue(parsing: Array(bytes.readableBytesView)))?.arrayValue,
                parts.count == 3, case .object = parts[0]
            else { continue }
            let queue = parts[2].stringValue ?? ""
            let priority = parts[0]["properties"]?["priority"]?.intValue ?? 0
            let delivery = Delivery(
                list: KombuLayout.list(queue: queue, priority: priority),
                envelope: parts[0].serialized(),
                tag: tag
            )
            if try await restore(delivery, deliveryTag: tag) { restored += 1 }
        }
        return restored
    }
}
