import CeleryProtocol
import RESP
import Redis

/// A fetched ETA message on its way from `unacked` to its queue's parked set.
package struct ParkedMessage: Sendable {
    /// The tag it is recorded under in `unacked`.
    package var tag: String
    /// The list it was popped from: it goes back there when due.
    package var list: String
    package var envelope: [UInt8]
    /// Its ETA, in Unix seconds: the score in the parked set.
    package var due: Double

    package init(tag: String, list: String, envelope: [UInt8], due: Double) {
        self.tag = tag
        self.list = list
        self.envelope = envelope
        self.due = due
    }
}

/// A message in a parked set, as `celery inspect scheduled` reports it.
package struct ParkedEntry: Sendable {
    package var due: Double
    package var list: String
    package var envelope: [UInt8]
}

/// ETA messages parked in Redis (docs/guarantees.md, "ETA and countdown"): a worker holds in memory only the
/// messages due soon; a message due later leaves `unacked` for a sorted set per queue, scored by its due time, and
/// goes back to the consuming end of its list shortly before it is due, where any worker (Python's too) takes it.
/// Both moves are one Lua step each, so a message is always in exactly one of `unacked`, the parked set or its
/// list, whatever instant a worker or Redis dies.
extension KombuBroker {
    /// The parked set of `queue`. Each member is the priority step's digit followed by the envelope.
    package func parkedKey(queue: String) -> String { layout.parkedKeyPrefix + queue }

    /// KEYS: unacked, unacked_index, then the parked sets. ARGV: groups of (index into KEYS, tag, due, member).
    /// A message no longer in `unacked` (a visibility restore gave it back meanwhile) is not parked: 0 for it.
    package static let parkScript = RedisScript(
        """
        local out = {}
        for i = 1, #ARGV, 4 do
          if redis.call('HDEL', KEYS[1], ARGV[i + 1]) == 1 then
            redis.call('ZREM', KEYS[2], ARGV[i + 1])
            redis.call('ZADD', KEYS[tonumber(ARGV[i])], ARGV[i + 2], ARGV[i + 3])
            out[#out + 1] = 1
          else
            out[#out + 1] = 0
          end
        end
        return out
        """
    )

    /// KEYS: the parked sets. ARGV: until (Unix seconds), limit per set, kombu's separator, then each set's queue.
    /// Moves the members due by `until` (at most `limit` of each set) to the consuming end of their lists, the
    /// earliest last so it is taken first. Returns how many moved, whether a set had more than `limit` due, and the
    /// earliest due time left (or false).
    package static let unparkScript = RedisScript(
        """
        local moved, full, earliest = 0, 0, nil
        local limit = tonumber(ARGV[2])
        local sub = string.sub
        for i = 1, #KEYS do
          local members = redis.call('ZRANGE', KEYS[i], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, limit)
          if #members > 0 then
            redis.call('ZREM', KEYS[i], unpack(members))
            local queue = ARGV[3 + i]
            for j = #members, 1, -1 do
              local member = members[j]
              local step = sub(member, 1, 1)
              local list = queue
              if step ~= '0' then list = queue .. ARGV[3] .. step end
              redis.call('RPUSH', list, sub(member, 2))
            end
            moved = moved + #members
            if #members == limit then full = 1 end
          end
          local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
          if first[2] and (earliest == nil or tonumber(first[2]) < tonumber(earliest)) then earliest = first[2] end
        end
        return {moved, full, earliest or false}
        """
    )

    package func park(_ messages: [ParkedMessage]) async throws(RedisError) -> [Bool] {
        guard !messages.isEmpty else { return [] }
        var keys = [layout.unackedKey, layout.unackedIndexKey]
        var keyIndex: [String: Int] = [:]
        var arguments: [String] = []
        arguments.reserveCapacity(messages.count * 4)
        for message in messages {
            let (queue, step) = KombuPriorityLists.split(list: message.list)
            let key = parkedKey(queue: queue)
            let index: Int
            if let known = keyIndex[key] {
                index = known
            } else {
                keys.append(key)
                index = keys.count
                keyIndex[key] = index
            }
            // The envelope decoded as a task, so it is UTF-8 JSON and survives the round trip through String.
            arguments.append(String(index))
            arguments.append(message.tag)
            arguments.append(String(message.due))
            arguments.append(String(step) + String(decoding: message.envelope, as: UTF8.self))
        }
        let reply = try await client.evaluate(Self.parkScript, keys: keys, arguments: arguments)
        return (reply.array ?? []).map { $0.int == 1 }
    }

    package func unpark(
        queues: [String],
        until: Double,
        limit: Int
    ) async throws(RedisError) -> (moved: Int, more: Bool, earliest: Double?) {
        guard !queues.isEmpty else { return (0, false, nil) }
        let reply = try await client.evaluate(
            Self.unparkScript,
            keys: queues.map { parkedKey(queue: $0) },
            arguments: [String(until), String(limit), KombuLayout.separator] + queues
        )
        let items = reply.array ?? []
        guard items.count == 3 else { return (0, false, nil) }
        return (items[0].int ?? 0, items[1].int == 1, items[2].string.flatMap(Double.init))
    }

    /// ZSCAN with a pattern per id: Redis matches the members itself, so only the matches cross the connection.
    package func findParked(ids: [String], queues: [String]) async throws(RedisError) -> [ParkedEntry] {
        var entries: [ParkedEntry] = []
        for queue in queues {
            for id in ids where !id.isEmpty {
                let pattern = "*\"" + Self.globEscaped(id) + "\"*"
                var cursor = "0"
                repeat {
                    let reply = try await client.send(
                        RESPCommand("ZSCAN", parkedKey(queue: queue), cursor, "MATCH", pattern, "COUNT", 1000)
                    )
                    guard let parts = reply.array, parts.count == 2, let next = parts[0].string else { break }
                    cursor = next
                    let items = parts[1].array ?? []
                    for index in stride(from: 0, to: items.count - 1, by: 2) {
                        if let entry = Self.entry(queue: queue, member: items[index], score: items[index + 1]) {
                            entries.append(entry)
                        }
                    }
                } while cursor != "0"
            }
        }
        return entries
    }

    /// `text` with the characters Redis's glob patterns treat specially escaped.
    static func globEscaped(_ text: String) -> String {
        var escaped = ""
        for character in text {
            if "*?[]\\^".contains(character) { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }

    static func entry(queue: String, member: RESPToken, score: RESPToken) -> ParkedEntry? {
        guard let bytes = member.bytes, bytes.readableBytes > 1, let due = score.double else { return nil }
        let text = Array(bytes.readableBytesView)
        return ParkedEntry(
            due: due,
            list: KombuPriorityLists.list(queue: queue, priority: Int(text[0]) - Int(UInt8(ascii: "0"))),
            envelope: Array(text[1...])
        )
    }

    package func parked(queues: [String], limit: Int) async throws(RedisError) -> [ParkedEntry] {
        var entries: [ParkedEntry] = []
        for queue in queues {
            let reply = try await client.send(
                RESPCommand("ZRANGE", parkedKey(queue: queue), 0, limit - 1, "WITHSCORES")
            )
            // RESP3 answers [[member, score], ...]; RESP2 a flat member, score, member, score, ...
            let items = reply.array ?? []
            let pairs: [(RESPToken, RESPToken)] =
                items.first?.array != nil
                ? items.compactMap { pair in pair.array.flatMap { $0.count == 2 ? ($0[0], $0[1]) : nil } }
                : stride(from: 0, to: items.count - 1, by: 2).map { (items[$0], items[$0 + 1]) }
            for (member, score) in pairs {
                if let entry = Self.entry(queue: queue, member: member, score: score) { entries.append(entry) }
            }
        }
        entries.sort { $0.due < $1.due }
        return Array(entries.prefix(limit))
    }
}
