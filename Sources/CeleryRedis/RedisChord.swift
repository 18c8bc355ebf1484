import CeleryProtocol
import JSON
import RESP
import Redis

/// One chord's state on the Redis result backend, as Celery 5.7 keeps it (docs/protocol.md §3.5), under
/// `K = celery-taskset-meta-<group id>`: `K.j` the finished header parts (a ZSET scored by `group_index`), `K.t` the
/// size adjustment, `K.s` the size the client set, `K.d` the parts already counted, `K.c` the callback claim.
///
/// Celery ≤ 5.6 workers use the same keys without `K.d` and `K.c`, and ≤ 5.0 clients set no `K.s` but put
/// `chord_size` in the callback signature; both work with these scripts.
package struct RedisChord: Sendable {
    package static let groupPrefix = "celery-taskset-meta-"

    package let groupID: String

    package init(groupID: String) {
        self.groupID = groupID
    }

    package var groupKey: String { Self.groupPrefix + groupID }
    package var joinKey: String { groupKey + ".j" }
    package var totalDiffKey: String { groupKey + ".t" }
    package var sizeKey: String { groupKey + ".s" }
    package var dedupeKey: String { groupKey + ".d" }
    package var claimKey: String { groupKey + ".c" }

    /// How long the claim lasts before the callback is published (Celery: max(5, 2 × result_chord_join_timeout)).
    package static let claimSeconds = 6
    /// How long the claim is extended for publishing the callback.
    package static let publishClaimSeconds = 21
    /// How long `K.c` says "done" after the callback went out, so a late duplicate part changes nothing.
    package static let doneSeconds = 300

    /// Stores a header task's own result (KEYS[7], skipped if SUCCESS is already stored) and then returns its part,
    /// in one atomic step, so only the worker whose part completes the chord claims the callback.
    ///
    /// KEYS: j, t, s, d, K, c[, meta key]. ARGV: task id, part (`[1, id, state, result]`), ordered (1: ZSET, 0:
    /// list), score (`group_index` or `+inf`), TTL of the chord keys, TTL of K, claim TTL, claim token, size when
    /// K.s is missing (0: none), and with a meta key: its payload and TTL (0: no expiry).
    /// Returns `{ready parts, expected parts or -1 when the size is unknown, claimed 1/0}`, or `{-1, -1, 0}` for a
    /// chord whose callback was already sent.
    package static let partReturnScript = RedisScript(
        """
        local metaKey = KEYS[7]
        if metaKey then
          local stored = redis.call('GET', metaKey)
          if not (stored and string.find(stored, '^{"status": *"SUCCESS"')) then
            local ttl = tonumber(ARGV[11])
            if ttl > 0 then
              redis.call('SETEX', metaKey, ttl, ARGV[10])
            else
              redis.call('SET', metaKey, ARGV[10])
            end
            redis.call('PUBLISH', metaKey, ARGV[10])
          end
        end
        if redis.call('GET', KEYS[6]) == 'done' then
          return {-1, -1, 0}
        end
        local counted = ARGV[1] .. ':' .. ARGV[4]
        local zset = ARGV[3] == '1'
        if redis.call('SISMEMBER', KEYS[4], counted) == 0 then
          if zset then
            redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
          else
            redis.call('RPUSH', KEYS[1], ARGV[2])
          end
          redis.call('SADD', KEYS[4], counted)
        end
        local ready
        if zset then ready = redis.call('ZCARD', KEYS[1]) else ready = redis.call('LLEN', KEYS[1]) end
        local ttl = tonumber(ARGV[5])
        if ttl > 0 then
          redis.call('EXPIRE', KEYS[1], ttl)
          redis.call('EXPIRE', KEYS[2], ttl)
          redis.call('EXPIRE', KEYS[3], ttl)
          redis.call('EXPIRE', KEYS[4], ttl)
          if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', KEYS[5], ARGV[6]) end
        end
        local size = tonumber(redis.call('GET', KEYS[3]) or '')
        if not size and tonumber(ARGV[9]) > 0 then size = tonumber(ARGV[9]) end
        if not size then
          return {ready, -1, 0}
        end
        local expected = size + (tonumber(redis.call('GET', KEYS[2]) or '0') or 0)
        local claimed = 0
        if ready == expected and redis.call('SET', KEYS[6], ARGV[8], 'NX', 'EX', ARGV[7]) then
          claimed = 1
        end
        return {ready, expected, claimed}
        """
    )

    /// Keeps the claim while the callback is published: extends it if this token still holds it, or takes it
    /// again if it lapsed and nobody else took it (and the chord was not cleaned up). KEYS: c, s. ARGV: token, TTL.
    package static let extendClaimScript = RedisScript(
        """
        local holder = redis.call('GET', KEYS[1])
        if holder == ARGV[1] then
          redis.call('EXPIRE', KEYS[1], ARGV[2])
          return 1
        end
        if not holder and redis.call('EXISTS', KEYS[2]) == 1 then
          if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
        end
        return 0
        """
    )

    /// After the callback went out: if this token holds the claim, drop the chord's keys and mark it done.
    /// KEYS: c, j, t, s, d. ARGV: token, seconds the done marker lasts.
    package static let cleanupScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then
          return 0
        end
        redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
        redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
        return 1
        """
    )

    /// What the part-return step answered.
    package struct PartReturn: Sendable, Equatable {
        /// Header parts stored so far; -1 when the chord was already completed (a late duplicate).
        package var ready: Int
        /// Parts the chord waits for; nil while the size is not known yet.
        package var expected: Int?
        /// True for the one worker that must send the callback (or store the chord's error).
        package var claimed: Bool
    }

    /// One finished header part: `[1, task id, state, result]` as Celery encodes it.
    package static func part(taskID: String, state: TaskState, result: JSONValue) -> String {
        JSONValue.array([1, .string(taskID), .string(state.rawValue), result]).serializedString()
    }

    /// Runs the part-return step; `meta` (key, payload) is the header task's own result, stored first.
    package func returnPart(
        on client: RedisClient,
        taskID: String,
        groupIndex: Int?,
        part: String,
        fallbackSize: Int?,
        meta: (key: String, payload: String)?,
        metaTTL: Int,
        chordTTL: Int,
        token: String
    ) async throws(RedisError) -> PartReturn {
        var keys = [joinKey, totalDiffKey, sizeKey, dedupeKey, groupKey, claimKey]
        var arguments = [
            taskID, part, "1", groupIndex.map(String.init) ?? "+inf", String(chordTTL), String(chordTTL),
            String(Self.claimSeconds), token, String(fallbackSize ?? 0),
        ]
        if let meta {
            keys.append(meta.key)
            arguments += [meta.payload, String(metaTTL)]
        }
        let reply = try await client.evaluate(Self.partReturnScript, keys: keys, arguments: arguments)
        guard let items = reply.array, items.count == 3, let ready = items[0].int, let expected = items[1].int,
            let claimed = items[2].int
        else {
            throw RedisError(.unexpectedReply, "the chord part-return script answered \(reply)")
        }
        return PartReturn(ready: ready, expected: expected < 0 ? nil : expected, claimed: claimed == 1)
    }

    /// The stored parts, in header order (ZSET score = `group_index`).
    package func parts(on client: RedisClient) async throws(RedisError) -> [JSONValue] {
        let reply = try await client.send(RESPCommand("ZRANGE", joinKey, 0, -1))
        guard let items = reply.array else {
            throw RedisError(.unexpectedReply, "ZRANGE \(joinKey) answered \(reply)")
        }
        return items.map { item in
            guard let bytes = item.bytes, let value = try? JSONValue(parsing: Array(bytes.readableBytesView)) else {
                return .null
            }
            return value
        }
    }

    /// The group meta `K`, when a client saved one (a header with nested groups, or `GroupResult.save()`).
    package func savedGroup(on client: RedisClient) async throws(RedisError) -> JSONValue? {
        let reply = try await client.send(RESPCommand("GET", groupKey))
        guard let bytes = reply.bytes else { return nil }
        return try? JSONValue(parsing: Array(bytes.readableBytesView))
    }

    /// Whether a chord marked done is reset for a new run (its claim key no longer `done`) within `window`.
    package func restarts(on client: RedisClient, within window: Duration) async throws(RedisError) -> Bool {
        let deadline = ContinuousClock.now + window
        while true {
            let reply = try await client.send(RESPCommand("GET", claimKey))
            if reply.bytes.map({ String(buffer: $0) }) != "done" { return true }
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    package func extendClaim(on client: RedisClient, token: String) async throws(RedisError) -> Bool {
        try await client.evaluate(
            Self.extendClaimScript,
            keys: [claimKey, sizeKey],
            arguments: [token, String(Self.publishClaimSeconds)]
        ).int == 1
    }

    package func cleanUp(on client: RedisClient, token: String) async throws(RedisError) -> Bool {
        try await client.evaluate(
            Self.cleanupScript,
            keys: [claimKey, joinKey, totalDiffKey, sizeKey, dedupeKey],
            arguments: [token, String(Self.doneSeconds)]
        ).int == 1
    }

    /// After a failed header: the size goes, so a late copy of a header task does not fail the chord again.
    package func dropSize(on client: RedisClient) async throws(RedisError) {
        try await client.send(RESPCommand("DEL", sizeKey))
    }
}

extension StoredException: Error {}

/// How the parts of a completed chord become the callback's argument, or the ChordError that replaces it.
package enum ChordJoin {
    /// The results in header order, or the error for the first part that failed or was revoked (Celery's
    /// `Dependency <id> raised <repr>`), or for a part that cannot be read.
    package static func results(_ parts: [JSONValue]) -> Result<[JSONValue], StoredException> {
        var results: [JSONValue] = []
        results.reserveCapacity(parts.count)
        for part in parts {
            guard let fields = part.arrayValue, fields.count == 4, let id = fields[1].stringValue,
                let state = fields[2].stringValue
            else {
                return .failure(chordError("Join error: a chord part cannot be read: \(part.serializedString())"))
            }
            if state == TaskState.failure.rawValue || state == TaskState.revoked.rawValue {
                var error = chordError("Dependency \(id) raised \(exceptionRepr(fields[3]))")
                error.cause = fields[3]
                return .failure(error)
            }
            results.append(fields[3])
        }
        return .success(results)
    }

    package static func chordError(_ message: String) -> StoredException {
        StoredException(type: "ChordError", module: "celery.exceptions", arguments: [.string(message)])
    }

    /// Python's `repr()` of the exception a stored `{exc_type, exc_message, exc_module}` rebuilds into.
    package static func exceptionRepr(_ value: JSONValue) -> String {
        guard let exception = StoredException(stored: value) else { return PythonRepr.render(value) }
        let name = exception.type.split(separator: ".").last.map(String.init) ?? exception.type
        return "\(name)(\(exception.arguments.map(PythonRepr.render).joined(separator: ", ")))"
    }

    /// Celery's join of a saved header (`GroupResult.restore(gid).join_native(propagate=True)`): each member's
    /// result, a nested group's as the list of its members'; the error of the first member that failed or was
    /// revoked (`Join error: <repr>`); nil while a result in `metas` (by task id) is not ready.
    package static func results(
        ofSaved saved: JSONValue,
        metas: [String: JSONValue]
    ) -> Result<[JSONValue], StoredException>? {
        enum Join: Error {
            case failed(StoredException)
            case notReady
        }
        func join(_ node: JSONValue) throws(Join) -> JSONValue {
            if let members = node[1]?.arrayValue {
                var joined: [JSONValue] = []
                for member in members { joined.append(try join(member)) }
                return .array(joined)
            }
            guard let id = node[0]?[0]?.stringValue else {
                throw .failed(chordError("Join error: a saved group member cannot be read: \(node.serializedString())"))
            }
            guard let meta = metas[id], let state = meta["status"]?.stringValue.flatMap(TaskState.init(rawValue:)),
                state.isReady
            else { throw .notReady }
            guard state == .success else {
                throw .failed(chordError("Join error: \(exceptionRepr(meta["result"] ?? .null))"))
            }
            return meta["result"] ?? .null
        }
        do {
            var joined: [JSONValue] = []
            for member in saved["result"]?[1]?.arrayValue ?? [] { joined.append(try join(member)) }
            return .success(joined)
        } catch .failed(let error) {
            return .failure(error)
        } catch {
            return nil
        }
    }

    /// True when a saved group meta holds nested groups (a header Celery joins through GroupResult).
    package static func hasNestedGroups(_ saved: JSONValue) -> Bool {
        // {"result": [[gid, parent], [member, ...]]}; a plain member is [[id, parent], null], a group is
        // [[gid, parent], [members...]].
        guard let members = saved["result"]?[1]?.arrayValue else { return false }
        return members.contains { member in member[1]?.arrayValue != nil }
    }
}
