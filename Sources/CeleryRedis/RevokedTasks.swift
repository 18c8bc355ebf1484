import CeleryProtocol
import JSON
import RESP
import Redis
import Synchronization

/// The revoked task ids, shared through Redis so every worker honours a revoke: the ones running when it was
/// broadcast, and the ones started later (or restarted).
///
/// Celery keeps this set only in each worker's memory (a `LimitedSet` of 50,000 ids, each kept 3 hours) and
/// passes it to starting workers through `hello`. Here every worker that receives a `revoke` also adds the ids to
/// the sorted set `swift-celery:revoked` (member: task id, score: the Unix time of the revoke), and a starting
/// worker loads it, as it does again whenever its control subscription reconnects (a broadcast missed while
/// disconnected is not lost). The same bounds as Celery: 50,000 ids, 3 hours.
package final class RevokedTasks: Sendable {
    /// Celery's `REVOKES_MAX`.
    package static let maximumCount = 50_000
    /// Celery's `REVOKE_EXPIRES`, in seconds.
    package static let expiry = 10_800.0

    package let client: RedisClient
    package let key: String
    /// id → Unix time of the revoke.
    private let ids = Mutex<[String: Double]>([:])

    package init(client: RedisClient, key: String) {
        self.client = client
        self.key = key
    }

    /// Whether `id` was revoked within the last 3 hours.
    package func contains(_ id: String) -> Bool {
        let now = CeleryTimestamp.now().secondsSince1970
        return ids.withLock { ids in
            guard let at = ids[id] else { return false }
            return at > now - Self.expiry
        }
    }

    /// The revoked ids, oldest first (as Celery lists them).
    package var list: [String] {
        let cutoff = CeleryTimestamp.now().secondsSince1970 - Self.expiry
        return ids.withLock { ids in
            ids.filter { $0.value > cutoff }.sorted { ($0.value, $0.key) < ($1.value, $1.key) }.map(\.key)
        }
    }

    /// Adds ids in this process only (ids another worker passed in `hello`, or loaded from Redis).
    package func addLocally(_ new: some Sequence<String>, at time: Double = CeleryTimestamp.now().secondsSince1970) {
        ids.withLock { ids in
            for id in new where !id.isEmpty { ids[id] = max(ids[id] ?? 0, time) }
            Self.trim(&ids)
        }
    }

    /// Adds ids here and in Redis, for every worker (those started later too).
    package func add(_ new: [String]) async throws(RedisError) {
        let now = CeleryTimestamp.now().secondsSince1970
        addLocally(new, at: now)
        guard !new.isEmpty else { return }
        var zadd = RESPCommand("ZADD", key)
        for id in new {
            zadd.append(String(now))
            zadd.append(id)
        }
        let replies = try await client.pipeline([
            zadd,
            RESPCommand("ZREMRANGEBYSCORE", key, "-inf", String(now - Self.expiry)),
            RESPCommand("ZREMRANGEBYRANK", key, 0, -(Self.maximumCount + 1)),
            RESPCommand("EXPIRE", key, Int(Self.expiry) + 60),
        ])
        for reply in replies { _ = try reply.get() }
    }

    /// Loads the ids revoked in the last 3 hours from Redis; returns how many there are.
    @discardableResult
    package func load() async throws(RedisError) -> Int {
        let now = CeleryTimestamp.now().secondsSince1970
        let reply = try await client.send(
            RESPCommand("ZRANGE", key, String(now - Self.expiry), "+inf", "BYSCORE", "WITHSCORES")
        )
        // RESP3 answers [[member, score], ...]; RESP2 a flat [member, score, ...].
        var flat: [RESPToken] = []
        for item in reply.array ?? [] {
            if let pair = item.array { flat.append(contentsOf: pair) } else { flat.append(item) }
        }
        var loaded: [(String, Double)] = []
        var index = 0
        while index + 1 < flat.count {
            if let id = flat[index].string, let score = flat[index + 1].double { loaded.append((id, score)) }
            index += 2
        }
        ids.withLock { ids in
            for (id, at) in loaded { ids[id] = max(ids[id] ?? 0, at) }
            Self.trim(&ids)
        }
        return loaded.count
    }

    /// Drops expired ids, then the oldest past the maximum count.
    private static func trim(_ ids: inout [String: Double]) {
        guard ids.count > maximumCount else { return }
        let cutoff = CeleryTimestamp.now().secondsSince1970 - expiry
        ids = ids.filter { $0.value > cutoff }
        guard ids.count > maximumCount else { return }
        let oldest = ids.sorted { $0.value < $1.value }.prefix(ids.count - maximumCount)
        for (id, _) in oldest { ids[id] = nil }
    }

    /// Stores REVOKED for a task as Celery 5.7's `revoke` command does: only when no result is stored yet or the
    /// stored state is PENDING, RECEIVED, RETRY or REJECTED (a task another worker started, or one that finished,
    /// keeps its state). KEYS[1]: the meta key. ARGV: TTL seconds (0: none), the payload. Returns 1 if stored.
    package static let markRevokedScript = RedisScript(
        """
        local current = redis.call('GET', KEYS[1])
        if current then
          local status = string.match(current, '"status"%s*:%s*"([^"]*)"')
          if status ~= 'PENDING' and status ~= 'RECEIVED' and status ~= 'RETRY' and status ~= 'REJECTED' then
            return 0
          end
        end
        local ttl = tonumber(ARGV[1])
        if ttl > 0 then
          redis.call('SETEX', KEYS[1], ttl, ARGV[2])
        else
          redis.call('SET', KEYS[1], ARGV[2])
        end
        redis.call('PUBLISH', KEYS[1], ARGV[2])
        return 1
        """
    )
}
