import CeleryProtocol
import JSON
import Logging
import NIOCore
import RESP
import Redis

/// The key names of kombu's Redis transport (transport options `unacked_key`, ... keep their defaults).
package struct KombuLayout: Sendable {
    /// `"\x06\x16"`: between a queue name and its priority step, and in binding members.
    package static let separator = KombuPriorityLists.separator
    /// kombu's `priority_steps`.
    package static let prioritySteps = KombuPriorityLists.steps

    package var unackedKey = "unacked"
    package var unackedIndexKey = "unacked_index"
    package var unackedMutexKey = "unacked_mutex"
    /// How long `unacked_mutex` lives if its holder dies mid-restore, in milliseconds (kombu's
    /// `unacked_mutex_expire`, 300 s).
    package var unackedMutexExpiry = 300_000
    /// Where messages no worker can decode are kept for an operator (ours; kombu drops them).
    package var deadLetterKey = "swift-celery:dead-letter"
    package var deadLetterLimit = 10_000
    /// Followed by a queue name: the sorted set of that queue's parked ETA messages (ours; see
    /// KombuBroker+Parking.swift).
    package var parkedKeyPrefix = "swift-celery:eta:"
    /// Messages longer than this many bytes are dead-lettered unparsed (0: no limit).
    package var maximumMessageSize = 0
    /// The crash guard's marks (ours): delivery tag → the worker whose acks-late handler is running it.
    package var runningKey = "swift-celery:running"
    /// The crash guard's counts (ours): delivery tag → how many times it was running when its worker died.
    package var crashCountKey = "swift-celery:crashes"
    /// A message found running this many times when its worker died is claimed instead of restored (0: never).
    package var maximumCrashes = 0

    package init() {}

    /// The list holding `queue`'s messages of priority `priority`: the largest step ≤ priority.
    package static func list(queue: String, priority: Int) -> String {
        KombuPriorityLists.list(queue: queue, priority: priority)
    }

    /// BRPOP key order: every queue at step 0, then every queue at step 3, ... (0 is the most urgent on Redis).
    package static func lists(queues: [String]) -> [String] { KombuPriorityLists.lists(queues: queues) }
}

/// A message popped from a queue list, and the list it came from.
package struct Delivery: Sendable {
    package var list: String
    package var envelope: [UInt8]
    /// The delivery tag it was recorded under in `unacked`; nil when it had none (it was not recorded).
    package var tag: String?
    /// Set when the message was larger than the size limit: it was not recorded, `envelope` is empty, and the
    /// message itself went to the dead-letter list.
    package var oversized: OversizedMessage? = nil
    /// The message, when it was decoded ahead while its pop travelled (from a copy an idle watcher saw).
    package var decoded: TaskMessage? {
        get { ahead?.message }
        set { ahead = newValue.map(DecodedAhead.init) }
    }
    /// Boxed: a `TaskMessage` held inline would add its whole size to every delivery, and 100,000 held ETA
    /// messages keep one delivery each.
    package var ahead: DecodedAhead? = nil

    package init(list: String, envelope: [UInt8], tag: String? = nil, oversized: OversizedMessage? = nil) {
        self.list = list
        self.envelope = envelope
        self.tag = tag
        self.oversized = oversized
    }
}

package final class DecodedAhead: Sendable {
    package let message: TaskMessage
    package init(_ message: TaskMessage) { self.message = message }
}

/// Fetches, records, acks and restores messages in kombu's exact Redis layout, so Python and Swift workers share
/// queues and recover each other's messages.
package struct KombuBroker: Broker {
    package let client: RedisClient
    package let layout: KombuLayout
    package let logger: Logger

    /// The connection `blockingPop` waits on.
    package let blocking = BlockingConnection()

    package init(client: RedisClient, layout: KombuLayout, logger: Logger) {
        self.client = client
        self.layout = layout
        self.logger = logger
    }

    package var deadLetterKey: String { layout.deadLetterKey }

    package func blockingPop(lists: [String], timeout: Duration) async throws(RedisError) -> Delivery? {
        try await blockingPop(connection: try await blocking.get(from: client), lists: lists, timeout: timeout)
    }

    package func closeBlockingPop() async {
        await blocking.close()
    }

    /// Pops up to ARGV[1] messages from KEYS[1..n-3] in order and records each in `unacked` (KEYS[n-2]) and
    /// `unacked_index` (KEYS[n-1]) in the same atomic step, so no popped message is ever unrecorded. A message
    /// without a delivery tag cannot be recorded or acked; it goes to the dead-letter list (KEYS[n]) instead.
    /// A message longer than ARGV[4] bytes (0: no limit) is measured here, in Redis, before anything parses it:
    /// it goes to the dead-letter list and only its size, task id and task name (looked up in its first and last
    /// 64 KiB) are returned, so it never crosses the connection.
    /// Returns a flat array: list, envelope, tag (or false), list, envelope, tag, ... where an oversized message's
    /// envelope is `[size, id or false, task name or false]`.
    ///
    /// The hot path: fields are found with a plain search for `"key": "` (kombu's json.dumps spacing) or `"key":"`
    /// (compact JSON, as this project's client and beat write), which costs Redis about 12 µs of CPU per message
    /// against 30 µs for a Lua pattern scanning the whole envelope; other spacing falls back to the pattern. A value with a backslash escape is not used (the exchange and routing key
    /// become empty rather than break the JSON of the `unacked` record). The records are written with one ZADD and
    /// one HSET per 500 messages.
    package static let popScript = RedisScript(
        """
        local limit = tonumber(ARGV[1])
        local now = ARGV[2]
        local maxSize = tonumber(ARGV[4])
        local n = #KEYS
        local unacked, index, dead = KEYS[n - 2], KEYS[n - 1], KEYS[n]
        local out = {}
        local count = 0
        local scores, records = {}, {}
        local find, sub, match = string.find, string.sub, string.match
        local function field(text, key)
          return match(text, '"' .. key .. '"%s*:%s*"([^"\\\\]+)"')
        end
        local function value(text, key)
          local _, e = find(text, '"' .. key .. '": "', 1, true)
          if not e then _, e = find(text, '"' .. key .. '":"', 1, true) end
          if e then
            local q = find(text, '"', e + 1, true)
            if q then
              local v = sub(text, e + 1, q - 1)
              if not find(v, '\\\\', 1, true) then return v end
            end
          end
          return nil
        end
        local function flush()
          if #scores > 0 then
            redis.call('ZADD', index, unpack(scores))
            redis.call('HSET', unacked, unpack(records))
            scores, records = {}, {}
          end
        end
        for i = 1, n - 3 do
          while count < limit do
            local message = redis.call('RPOP', KEYS[i])
            if not message then break end
            local tag = nil
            if maxSize > 0 and #message > maxSize then
              local head, tail = sub(message, 1, 65536), sub(message, -65536)
              local id = field(tail, 'id') or field(head, 'id') or field(tail, 'correlation_id')
                or field(head, 'correlation_id')
              local task = field(tail, 'task') or field(head, 'task')
              redis.call('LPUSH', dead, message)
              redis.call('LTRIM', dead, 0, tonumber(ARGV[3]) - 1)
              message = {#message, id or false, task or false}
            else
              tag = value(message, 'delivery_tag')
              if tag == '' then tag = nil end
              if not tag then tag = field(message, 'delivery_tag') end
            end
            if type(message) == 'table' then
            elseif tag then
              local exchange = value(message, 'exchange') or match(message, '"exchange"%s*:%s*"([^"\\\\]*)"') or ''
              local rk = value(message, 'routing_key') or match(message, '"routing_key"%s*:%s*"([^"\\\\]*)"') or ''
              scores[#scores + 1] = now
              scores[#scores + 1] = tag
              records[#records + 1] = tag
              records[#records + 1] = '[' .. message .. ', "' .. exchange .. '", "' .. rk .. '"]'
              if #scores >= 1000 then flush() end
            else
              redis.call('LPUSH', dead, message)
              redis.call('LTRIM', dead, 0, tonumber(ARGV[3]) - 1)
            end
            out[#out + 1] = KEYS[i]
            out[#out + 1] = message
            out[#out + 1] = tag or false
            count = count + 1
          end
        end
        flush()
        return out
        """
    )

    /// Puts a held message back at the consuming end of its list, as kombu's restore does (or at the back when
    /// ARGV[3] is `LPUSH`, as its `reject(requeue=True)`), but only if it is still in `unacked` (another worker may
    /// have restored it already). A message given back this way did not crash its worker: its running mark goes
    /// too.
    /// KEYS: unacked, unacked_index, list, running. ARGV: tag, envelope, RPUSH or LPUSH.
    package static let restoreScript = RedisScript(
        """
        if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
          redis.call('ZREM', KEYS[2], ARGV[1])
          redis.call('HDEL', KEYS[1], ARGV[1])
          redis.call('HDEL', KEYS[4], ARGV[1])
          redis.call(ARGV[3] == 'LPUSH' and 'LPUSH' or 'RPUSH', KEYS[3], ARGV[2])
          return 1
        end
        return 0
        """
    )

    /// The visibility restore of one expired message, with the crash guard. A message with a running mark was
    /// running when its worker died (an acks-late handler had started; prefetched messages are never marked):
    /// its crash count goes up, and once it reaches ARGV[3] (when ARGV[3] > 0) the caller claims it instead of
    /// restoring it: it stays in `unacked` with a fresh score (ARGV[4]), so no other restore takes it while the
    /// caller fails it. Otherwise it goes back as `restoreScript` puts it. The counts live a week after the last
    /// crash (a message that crashed, came back and was then acked by a Python worker leaves its count behind).
    /// KEYS: unacked, unacked_index, list, running, crash counts. ARGV: tag, envelope, maximum crashes, now.
    /// Returns {0} when the message was gone, {1, crashes} when restored, {2, crashes} when claimed.
    package static let restoreExpiredScript = RedisScript(
        """
        if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {0, 0} end
        local maximum = tonumber(ARGV[3])
        local crashes = 0
        if maximum > 0 and redis.call('HDEL', KEYS[4], ARGV[1]) == 1 then
          crashes = redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
          redis.call('EXPIRE', KEYS[5], 604800)
          if crashes >= maximum then
            redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
            return {2, crashes}
          end
        end
        redis.call('ZREM', KEYS[2], ARGV[1])
        redis.call('HDEL', KEYS[1], ARGV[1])
        redis.call('RPUSH', KEYS[3], ARGV[2])
        return {1, crashes}
        """
    )

    package static func now() -> String {
        String(CeleryTimestamp.now().secondsSince1970)
    }

    /// Declares the queues as kombu does: the binding of each queue to its same-named direct exchange.
    package func declare(queues: [String]) async throws(RedisError) {
        var commands: [RESPCommand] = []
        for queue in queues {
            let member = queue + KombuLayout.separator + KombuLayout.separator + queue
            commands.append(RESPCommand("SADD", "_kombu.binding.\(queue)", member))
            commands.append(RESPCommand("SADD", "_kombu.binding_permanent.\(queue)", member))
        }
        for reply in try await client.pipeline(commands) { _ = try reply.get() }
    }

    /// Pops and records up to `limit` waiting messages in one round trip.
    /// `stamp` is the `unacked_index` score the popped messages get: if the reply is lost (Redis died or the
    /// connection dropped after the script ran), ``recoverLostPop(stamp:holding:)`` finds them by it.
    package func pop(
        lists: [String],
        limit: Int,
        stamp: String = KombuBroker.now()
    ) async throws(RedisError) -> [Delivery] {
        try await startPop(lists: lists, limit: limit, stamp: stamp).deliveries()
    }

    /// A pop written to Redis whose reply has not been read yet.
    /// Sends ``popScript`` and returns before its reply: the caller can work while the pop travels.
    package func startPop(
        lists: [String],
        limit: Int,
        stamp: String = KombuBroker.now()
    ) async throws(RedisError) -> PendingPop {
        let reply = try await client.startEvaluate(
            Self.popScript,
            keys: lists + [layout.unackedKey, layout.unackedIndexKey, layout.deadLetterKey],
            arguments: [String(limit), stamp, String(layout.deadLetterLimit), String(layout.maximumMessageSize)]
        )
        return PendingPop { () throws(RedisError) in KombuBroker.deliveries(popReply: try await reply.reply()) }
    }

    /// The deliveries in a reply of ``popScript``: list, envelope, tag (or false) triples.
    package static func deliveries(popReply reply: RESPToken) -> [Delivery] {
        guard let items = reply.array else { return [] }
        var deliveries: [Delivery] = []
        deliveries.reserveCapacity(items.count / 3)
        var index = 0
        while index + 2 < items.count {
            let list = items[index].string ?? ""
            if let oversized = items[index + 1].array {
                deliveries.append(
                    Delivery(list: list, envelope: [], tag: nil, oversized: OversizedMessage(scriptReply: oversized))
                )
            } else {
                let envelope = items[index + 1].bytes.map { Array($0.readableBytesView) } ?? []
                deliveries.append(Delivery(list: list, envelope: envelope, tag: items[index + 2].string))
            }
            index += 3
        }
        return deliveries
    }

    /// Waits up to `timeout` for one message with BRPOP on a dedicated connection, then records it.
    ///
    /// Between the pop and the record there is kombu's window: a crash there loses the message. The worker only
    /// blocks here when every list was empty at the last atomic pop.
    package func blockingPop(
        connection: RedisConnection,
        lists: [String],
        timeout: Duration
    ) async throws(RedisError)
        -> Delivery?
    {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let reply = try await connection.sendBlocking(
            RESPCommand("BRPOP", lists, String(seconds)),
            blockingTimeout: timeout
        )
        guard let pair = reply.array, pair.count == 2, let list = pair[0].string, let bytes = pair[1].bytes else {
            return nil
        }
        if layout.maximumMessageSize > 0, bytes.readableBytes > layout.maximumMessageSize {
            // Measured before parsing: the message is not recorded, only kept in the dead-letter list.
            let oversized = OversizedMessage(scanning: bytes.readableBytesView)
            try await deadLetter(Array(bytes.readableBytesView))
            return Delivery(list: list, envelope: [], tag: nil, oversized: oversized)
        }
        var delivery = Delivery(list: list, envelope: Array(bytes.readableBytesView))
        delivery.tag = try await record(delivery)
        return delivery
    }

    /// Records a message popped outside the script, as kombu does right after BRPOP; returns its tag, or nil when
    /// it had none (it then went to the dead-letter list).
    @discardableResult
    package func record(_ delivery: Delivery) async throws(RedisError) -> String? {
        guard let envelope = try? JSONValue(parsing: delivery.envelope),
            let properties = envelope["properties"],
            let tag = properties["delivery_tag"]?.stringValue
        else {
            try await deadLetter(delivery.envelope)
            return nil
        }
        let exchange = properties["delivery_info"]?["exchange"]?.stringValue ?? ""
        let routingKey = properties["delivery_info"]?["routing_key"]?.stringValue ?? ""
        var value = ByteBuffer()
        value.writeString("[")
        value.writeBytes(delivery.envelope)
        value.writeString(", ")
        value.writeBytes(JSONValue.string(exchange).serialized())
        value.writeString(", ")
        value.writeBytes(JSONValue.string(routingKey).serialized())
        value.writeString("]")
        _ = try await client.transaction([
            RESPCommand("ZADD", layout.unackedIndexKey, Self.now(), tag),
            RESPCommand("HSET", layout.unackedKey, tag, value),
        ])
        return tag
    }

    /// The envelope with `headers.redelivered` and `properties.delivery_info.redelivered` set, as kombu restores it.
    package static func markedRedelivered(_ bytes: [UInt8]) -> [UInt8] {
        guard case .object(var object)? = try? JSONValue(parsing: bytes) else { return bytes }
        if case .object(var headers)? = object["headers"] {
            headers["redelivered"] = true
            object["headers"] = .object(headers)
        }
        if case .object(var properties)? = object["properties"], case .object(var info)? = properties["delivery_info"] {
            info["redelivered"] = true
            properties["delivery_info"] = .object(info)
            object["properties"] = .object(properties)
        }
        return JSONValue.object(object).serialized()
    }

    /// Keeps a copy of a message no worker can run in the capped dead-letter list, for an operator to inspect.
    package func deadLetter(_ envelope: [UInt8]) async throws(RedisError) {
        let replies = try await client.pipeline([
            RESPCommand("LPUSH", layout.deadLetterKey, RESPBytes(envelope)),
            RESPCommand("LTRIM", layout.deadLetterKey, 0, layout.deadLetterLimit - 1),
        ])
        for reply in replies { _ = try reply.get() }
    }

    /// Gives a message that did not run back to its list, marked redelivered, as kombu's restore does.
    @discardableResult
    package func restore(_ delivery: Delivery, deliveryTag: String, atBack: Bool) async throws(RedisError) -> Bool {
        let envelope = Self.markedRedelivered(delivery.envelope)
        let reply = try await client.evaluate(
            Self.restoreScript,
            keys: [layout.unackedKey, layout.unackedIndexKey, delivery.list, layout.runningKey],
            arguments: [deliveryTag, String(decoding: envelope, as: UTF8.self), atBack ? "LPUSH" : "RPUSH"]
        )
        return reply.int == 1
    }

    /// Marks acks-late messages whose handlers are about to run, in one HSET: the crash guard counts a dead
    /// worker's message as a crash only if it carries this mark. The ack removes it.
    package func markRunning(_ tags: [String], worker: String) async throws(RedisError) {
        guard !tags.isEmpty else { return }
        var command = RESPCommand("HSET")
        command.append(layout.runningKey)
        for tag in tags {
            command.append(tag)
            command.append(worker)
        }
        _ = try await client.send(command)
    }

    package func clearRunning(_ tag: String) async throws(RedisError) {
        _ = try await client.send(RESPCommand("HDEL", layout.runningKey, tag))
    }

    package func crashCount(_ tag: String) async throws(RedisError) -> Int {
        let reply = try await client.send(RESPCommand("HGET", layout.crashCountKey, tag))
        return reply.string.flatMap { Int($0) } ?? 0
    }

    /// Compare-and-delete of `unacked_mutex`, as kombu releases it.
    package static let releaseMutexScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          return redis.call('DEL', KEYS[1])
        end
        return 0
        """
    )

    /// kombu's visibility-timeout restore: under `unacked_mutex`, every message whose `unacked_index` score is
    /// older than `cutoff` goes back to its queue (marked redelivered), unless it is one this worker holds.
    /// A live worker refreshes the scores of what it holds, so only messages of dead workers come back.
    /// With the crash guard on (`maximumCrashes` > 0), a message that was running each of the last
    /// `maximumCrashes` times its worker died is claimed instead (``restoreExpiredScript``): it is returned, still
    /// in `unacked` under a fresh score, for the caller to fail and ack.
    package func restoreExpired(
        olderThan cutoff: Double,
        holding: Set<String>
    ) async throws(RedisError) -> ExpiredRestore {
        let token = OutgoingTask.newID()
        let locked = try await client.send(
            RESPCommand("SET", layout.unackedMutexKey, token, "NX", "PX", layout.unackedMutexExpiry)
        )
        guard !locked.isNull else { return ExpiredRestore() }
        var report = ExpiredRestore()
        var failure: RedisError?
        do {
            let reply = try await client.send(
                RESPCommand("ZRANGE", layout.unackedIndexKey, cutoff, "-inf", "BYSCORE", "REV", "LIMIT", 0, 1000)
            )
            for tag in reply.array?.compactMap(\.string) ?? [] where !holding.contains(tag) {
                let stored = try await client.send(RESPCommand("HGET", layout.unackedKey, tag))
                guard let bytes = stored.bytes,
                    let parts = (try? JSONValue(parsing: Array(bytes.readableBytesView)))?.arrayValue,
                    parts.count == 3, case .object = parts[0]
                else {
                    // An index entry with no message behind it: drop it, as kombu does.
                    try await client.send(RESPCommand("ZREM", layout.unackedIndexKey, tag))
                    continue
                }
                let queue = try await queue(
                    exchange: parts[1].stringValue ?? "",
                    routingKey: parts[2].stringValue ?? ""
                )
                let priority = parts[0]["properties"]?["priority"]?.intValue ?? 0
                let delivery = Delivery(
                    list: KombuLayout.list(queue: queue, priority: priority),
                    envelope: parts[0].serialized(),
                    tag: tag
                )
                let reply = try await client.evaluate(
                    Self.restoreExpiredScript,
                    keys: [
                        layout.unackedKey, layout.unackedIndexKey, delivery.list, layout.runningKey,
                        layout.crashCountKey,
                    ],
                    arguments: [
                        tag, String(decoding: Self.markedRedelivered(delivery.envelope), as: UTF8.self),
                        String(layout.maximumCrashes), Self.now(),
                    ]
                )
                let outcome = reply.array ?? []
                switch outcome.first?.int {
                case 1: report.restored += 1
                case 2: report.claimed.append(CrashedDelivery(delivery: delivery, crashes: outcome.last?.int ?? 0))
                default: break
                }
            }
        } catch {
            failure = error
        }
        _ = try? await client.evaluate(Self.releaseMutexScript, keys: [layout.unackedMutexKey], arguments: [token])
        if let failure { throw failure }
        return report
    }

    /// The queue a message was routed to: the routing key for Celery's direct (anonymous) exchange, else the
    /// queue bound to the exchange with that routing key.
    private func queue(exchange: String, routingKey: String) async throws(RedisError) -> String {
        guard !exchange.isEmpty else { return routingKey }
        let members = try await client.send(RESPCommand("SMEMBERS", "_kombu.binding.\(exchange)")).array ?? []
        for member in members.compactMap(\.string) {
            // routing_key SEP pattern SEP queue; the separator is two scalars that never occur in names.
            let fields = member.split(separator: "\u{06}", omittingEmptySubsequences: false)
                .map { $0.hasPrefix("\u{16}") ? $0.dropFirst() : $0 }
            if fields.count == 3, fields[0] == routingKey { return String(fields[2]) }
        }
        return routingKey
    }

    /// Moves the `unacked_index` score of messages this worker still holds to now, so no restore takes them.
    package func refresh(_ tags: Set<String>) async throws(RedisError) {
        guard !tags.isEmpty else { return }
        let now = Self.now()
        var commands: [RESPCommand] = []
        var command = RESPCommand("ZADD")
        command.append(layout.unackedIndexKey)
        command.append("XX")
        var count = 0
        for tag in tags {
            command.append(now)
            command.append(tag)
            count += 1
            if count == 1000 {
                commands.append(command)
                command = RESPCommand("ZADD")
                command.append(layout.unackedIndexKey)
                command.append("XX")
                count = 0
            }
        }
        if count > 0 { commands.append(command) }
        for reply in try await client.pipeline(commands) { _ = try reply.get() }
    }
}
