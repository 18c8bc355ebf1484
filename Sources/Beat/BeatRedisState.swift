import Logging
import RESP
import Redis
import Synchronization

/// Beat's state in Redis: per entry its next due time and run record, the leader lock, and a capped history of
/// what was sent. Every change a leader makes runs as a Lua script that first checks the caller still holds the
/// lock, so a leader that lost the lock (paused, partitioned) can change nothing.
///
/// Keys (prefix `swift-celery:beat:` by default):
/// - `<prefix>schedule` ZSET: member = entry name, score = next due time (milliseconds since 1970).
/// - `<prefix>entry:<name>` HASH: `definition` (JSON), `schedule_key`, `last_run_at`, `last_due_at`,
///   `total_run_count`, `last_skipped_at` (milliseconds since 1970).
/// - `<prefix>entries` SET: the names beat has synced, so removed entries can be found.
/// - `<prefix>lock` STRING: the leader's token, with a TTL it renews.
/// - `<prefix>history` LIST: newest first, one JSON record per message sent (capped).
public struct BeatRedisState: Sendable {
    /// The key prefix.
    public var prefix: String
    let client: RedisClient

    /// Creates the state over a client; nothing is sent until used.
    public init(client: RedisClient, prefix: String = "swift-celery:beat:") {
        self.client = client
        self.prefix = prefix
    }

    public var scheduleKey: String { prefix + "schedule" }
    public var entriesKey: String { prefix + "entries" }
    public var lockKey: String { prefix + "lock" }
    public var historyKey: String { prefix + "history" }
    public func entryKey(_ name: String) -> String { prefix + "entry:" + name }

    // MARK: - Lock

    /// What `acquire` found.
    public enum LockOutcome: Sendable, Equatable {
        /// `token` already held the lock; it is extended.
        case extended
        /// The lock was free and `token` now holds it (a new leader, or Redis lost the key: sync again).
        case taken
        /// Another token holds it.
        case heldByAnother

        /// Whether `token` holds the lock now.
        public var held: Bool { self != .heldByAnother }
    }

    /// Takes the lock if free, or extends it if `token` already holds it.
    public func acquire(token: String, timeout: Int64) async throws(RedisError) -> LockOutcome {
        let reply = try await client.evaluate(
            Self.acquireScript,
            keys: [lockKey],
            arguments: [token, String(timeout)]
        )
        switch reply.int {
        case 1: return .extended
        case 2: return .taken
        default: return .heldByAnother
        }
    }

    /// Gives the lock up if `token` holds it.
    public func release(token: String) async throws(RedisError) {
        try await client.evaluate(Self.releaseScript, keys: [lockKey], arguments: [token])
    }

    // MARK: - Entries

    /// What syncing one entry did.
    public enum SyncOutcome: Sendable, Equatable {
        /// New, re-enabled, or its schedule changed: due at the given time.
        case scheduled(Int64)
        /// Known with the same schedule: its due time is kept.
        case kept(Int64)
        /// Disabled (or never due again): out of the schedule.
        case unscheduled
    }

    /// Makes Redis match the entries: definitions written, new or changed schedules due anew from `now`, unchanged
    /// ones kept (so a restart neither skips nor doubles a slot), disabled ones unscheduled, and entries no longer
    /// listed removed. Throws `notLeader` if `token` does not hold the lock. `betweenChunks` runs before each
    /// pipelined chunk of 500 (the scheduler renews its lock there).
    @discardableResult
    public func sync(
        _ entries: [BeatEntry],
        now: Int64,
        token: String,
        betweenChunks: () async throws -> Void = {}
    ) async throws -> [String: SyncOutcome] {
        let connection = try await client.connection()
        var outcomes: [String: SyncOutcome] = [:]
        for chunk in stride(from: 0, to: entries.count, by: 500).map({ entries[$0..<min($0 + 500, entries.count)] }) {
            try await betweenChunks()
            let entries = Array(chunk)
            let replies = try await pipelineScripts(entries.count, on: connection) { index throws(RedisError) in
                let entry = entries[index]
                let first = entry.enabled ? entry.schedule.firstDue(now: now) : nil
                return try await evalCommand(
                    Self.syncScript,
                    keys: [lockKey, scheduleKey, entryKey(entry.name), entriesKey],
                    arguments: [
                        token, entry.name, entry.schedule.canonicalKey, entry.definition.serializedString(),
                        first.map { String($0) } ?? "",
                    ],
                    on: connection
                )
            }
            for (entry, reply) in zip(chunk, replies) {
                let answer = try Self.checked(reply)
                let values = answer.array ?? []
                let kind = values.first?.string ?? ""
                let due = values.count > 1 ? Int64(values[1].string ?? "") : nil
                switch (kind, due) {
                case ("scheduled", let due?): outcomes[entry.name] = .scheduled(due)
                case ("kept", let due?): outcomes[entry.name] = .kept(due)
                default: outcomes[entry.name] = .unscheduled
                }
            }
        }
        let known = try await client.send(RESPCommand("SMEMBERS", entriesKey)).array?.compactMap(\.string) ?? []
        let listed = Set(entries.map(\.name))
        for name in known where !listed.contains(name) {
            try await remove(name, token: token)
        }
        return outcomes
    }

    /// Forgets an entry: its due time, record and name.
    public func remove(_ name: String, token: String) async throws {
        let reply = try await client.evaluate(
            Self.removeScript,
            keys: [lockKey, scheduleKey, entryKey(name), entriesKey],
            arguments: [token, name]
        )
        _ = reply
    }

    /// Up to `limit` entries due at or before `now`, earliest first, with their due times.
    public func due(now: Int64, limit: Int = 1000) async throws(RedisError) -> [(name: String, due: Int64)] {
        let reply = try await client.send(
            RESPCommand("ZRANGEBYSCORE", scheduleKey, "-inf", String(now), "WITHSCORES", "LIMIT", "0", String(limit))
        )
        return Self.pairs(reply)
    }

    /// The earliest due time in the schedule, if any.
    public func earliestDue() async throws(RedisError) -> Int64? {
        let reply = try await client.send(RESPCommand("ZRANGE", scheduleKey, "0", "0", "WITHSCORES"))
        return Self.pairs(reply).first?.due
    }

    /// The due time of one entry, if scheduled.
    public func dueTime(of name: String) async throws(RedisError) -> Int64? {
        let reply = try await client.send(RESPCommand("ZSCORE", scheduleKey, name))
        return reply.double.map { Int64($0.rounded()) }
    }

    /// One step of firing an entry, run atomically in Redis.
    public struct Fire: Sendable {
        public var name: String
        /// The due time this step consumes; the step does nothing if the entry's due time is no longer this.
        public var expectedDue: Int64
        /// The entry's next due time, nil when it never runs again.
        public var nextDue: Int64?
        public var firedAt: Int64
        /// The message to push and its list; nil to advance without sending (a slot past the starting deadline).
        public var message: (list: String, queue: String, envelope: [UInt8])?
        /// The history record (JSON) kept with the message.
        public var record: String
    }

    /// What a fire step did.
    public enum FireOutcome: Sendable, Equatable {
        /// The message was pushed and the entry advanced, in one step.
        case sent
        /// The entry advanced without a message (the slot was past the starting deadline).
        case skipped
        /// Another step already consumed this due time (or the entry is gone): nothing was done.
        case stale
    }

    /// Runs the fire steps, pipelined; each is atomic on its own and checks the lock.
    public func fire(_ steps: [Fire], token: String, historyLimit: Int) async throws -> [FireOutcome] {
        guard !steps.isEmpty else { return [] }
        let connection = try await client.connection()
        let replies = try await pipelineScripts(steps.count, on: connection) { index throws(RedisError) in
            let step = steps[index]
            let queue = step.message?.queue ?? ""
            let member = queue + "\u{06}\u{16}\u{06}\u{16}" + queue
            var command = try await evalCommand(
                Self.fireScript,
                keys: [
                    lockKey, scheduleKey, entryKey(step.name), step.message?.list ?? "",
                    "_kombu.binding." + queue, "_kombu.binding_permanent." + queue, historyKey,
                ],
                arguments: [
                    token, step.name, String(step.expectedDue), step.nextDue.map { String($0) } ?? "",
                    String(step.firedAt),
                ],
                on: connection
            )
            command.append(RESPBytes(step.message?.envelope ?? []))
            command.append(member)
            command.append(step.record)
            command.append(String(historyLimit))
            return command
        }
        var outcomes: [FireOutcome] = []
        for reply in replies {
            switch try Self.checked(reply).int {
            case 1: outcomes.append(.sent)
            case 2: outcomes.append(.skipped)
            default: outcomes.append(.stale)
            }
        }
        return outcomes
    }

    // MARK: - Helpers

    /// An EVALSHA command for `script`, loading the script on `connection` first when this process has not.
    private func evalCommand(
        _ script: RedisScript,
        keys: [String],
        arguments: [String],
        on connection: RedisConnection
    ) async throws(RedisError) -> RESPCommand {
        if Self.bySource.value {
            return RESPCommand("EVAL", script.source, keys.count, keys, arguments)
        }
        let sha = try await Self.shas.sha(of: script, on: connection)
        return RESPCommand("EVALSHA", sha, keys.count, keys, arguments)
    }

    /// Set while NOSCRIPT replies are run again: those go as EVAL with the source, which no flush can race.
    @TaskLocal private static var bySource = Flag(value: false)

    private struct Flag: Sendable {
        var value: Bool
    }

    private static let shas = ScriptCache()

    /// Runs `count` EVALSHA commands pipelined. Those answered NOSCRIPT (the server's script cache was flushed or
    /// Redis restarted, so they did nothing) run once more, as EVAL with the source; the others keep their replies,
    /// so no step runs twice.
    private func pipelineScripts(
        _ count: Int,
        on connection: RedisConnection,
        command: (Int) async throws(RedisError) -> RESPCommand
    ) async throws -> [Result<RESPToken, RedisError>] {
        var commands: [RESPCommand] = []
        commands.reserveCapacity(count)
        for index in 0..<count { commands.append(try await command(index)) }
        var replies = try await connection.pipeline(commands)
        let missing = replies.indices.filter { Self.isNoScript(replies[$0]) }
        guard !missing.isEmpty else { return replies }
        Self.shas.forget()
        var again: [RESPCommand] = []
        try await Self.$bySource.withValue(Flag(value: true)) {
            for index in missing { again.append(try await command(index)) }
        }
        for (index, reply) in zip(missing, try await connection.pipeline(again)) { replies[index] = reply }
        return replies
    }

    private static func isNoScript(_ result: Result<RESPToken, RedisError>) -> Bool {
        switch result {
        case .success(let token): token.isError && (token.errorMessage ?? "").hasPrefix("NOSCRIPT")
        case .failure(let error): error.serverErrorPrefix == "NOSCRIPT"
        }
    }

    /// The reply, or the error it carries: NOTLEADER becomes `BeatError.notLeader`; NOSCRIPT makes the cache
    /// forget its SHAs so the next attempt loads them again.
    static func checked(_ result: Result<RESPToken, RedisError>) throws -> RESPToken {
        switch result {
        case .success(let token):
            if token.isError {
                let message = token.errorMessage ?? "error"
                if message.hasPrefix("NOTLEADER") { throw BeatError(.notLeader, "the beat lock is held by another") }
                if message.hasPrefix("NOSCRIPT") { shas.forget() }
                throw BeatError(.redis, message)
            }
            return token
        case .failure(let error):
            if error.serverErrorPrefix == "NOTLEADER" {
                throw BeatError(.notLeader, "the beat lock is held by another")
            }
            if error.serverErrorPrefix == "NOSCRIPT" { shas.forget() }
            throw error
        }
    }

    /// `[member, score, ...]` (RESP2) or `[[member, score], ...]` (RESP3).
    static func pairs(_ reply: RESPToken) -> [(name: String, due: Int64)] {
        let items = reply.array ?? []
        var result: [(name: String, due: Int64)] = []
        if let first = items.first, first.array != nil {
            for pair in items {
                guard let parts = pair.array, parts.count == 2, let name = parts[0].string,
                    let score = parts[1].double
                else { continue }
                result.append((name, Int64(score.rounded())))
            }
        } else {
            var index = 0
            while index + 1 < items.count {
                if let name = items[index].string, let score = items[index + 1].double {
                    result.append((name, Int64(score.rounded())))
                }
                index += 2
            }
        }
        return result
    }

    // MARK: - Scripts

    static let acquireScript = RedisScript(
        """
        local holder = redis.call('GET', KEYS[1])
        if holder == ARGV[1] then
          redis.call('PEXPIRE', KEYS[1], ARGV[2])
          return 1
        end
        if holder then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return 2
        """
    )

    static let releaseScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """
    )

    /// KEYS: lock, schedule, entry hash, entries set. ARGV: token, name, schedule key, definition, first due
    /// ('' = unscheduled).
    static let syncScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOTLEADER beat lock not held') end
        local old = redis.call('HGET', KEYS[3], 'schedule_key')
        redis.call('HSET', KEYS[3], 'definition', ARGV[4], 'schedule_key', ARGV[3])
        redis.call('SADD', KEYS[4], ARGV[2])
        if ARGV[5] == '' then
          redis.call('ZREM', KEYS[2], ARGV[2])
          return {'unscheduled'}
        end
        local due = redis.call('ZSCORE', KEYS[2], ARGV[2])
        if old == ARGV[3] and due then return {'kept', string.format('%d', tonumber(due))} end
        redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
        return {'scheduled', ARGV[5]}
        """
    )

    /// KEYS: lock, schedule, entry hash, entries set. ARGV: token, name.
    static let removeScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOTLEADER beat lock not held') end
        redis.call('ZREM', KEYS[2], ARGV[2])
        redis.call('SREM', KEYS[4], ARGV[2])
        return redis.call('DEL', KEYS[3])
        """
    )

    /// The atomic step: the lock is ours, the entry is still due at the expected time → advance it, record the
    /// run, and push the message, all or nothing.
    /// KEYS: lock, schedule, entry hash, queue list, binding, permanent binding, history.
    /// ARGV: token, name, expected due, next due ('' = never), fired at, envelope ('' = skip), binding member,
    /// history record, history limit.
    static let fireScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOTLEADER beat lock not held') end
        local due = redis.call('ZSCORE', KEYS[2], ARGV[2])
        if not due or tonumber(due) ~= tonumber(ARGV[3]) then return 0 end
        if ARGV[4] == '' then
          redis.call('ZREM', KEYS[2], ARGV[2])
        else
          redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
        end
        if ARGV[6] == '' then
          redis.call('HSET', KEYS[3], 'last_skipped_at', ARGV[5])
          return 2
        end
        redis.call('HSET', KEYS[3], 'last_run_at', ARGV[5], 'last_due_at', ARGV[3])
        redis.call('HINCRBY', KEYS[3], 'total_run_count', 1)
        redis.call('SADD', KEYS[5], ARGV[7])
        redis.call('SADD', KEYS[6], ARGV[7])
        redis.call('LPUSH', KEYS[4], ARGV[6])
        local limit = tonumber(ARGV[9])
        if limit > 0 then
          redis.call('LPUSH', KEYS[7], ARGV[8])
          redis.call('LTRIM', KEYS[7], 0, limit - 1)
        end
        return 1
        """
    )
}

/// The SHA of each script as loaded on the server, shared by all connections of the process (the script cache
/// is per server, so a SHA loaded once serves every connection until `SCRIPT FLUSH` or a restart).
final class ScriptCache: Sendable {
    private let shas = Mutex<[String: String]>([:])

    func sha(of script: RedisScript, on connection: RedisConnection) async throws(RedisError) -> String {
        if let known = shas.withLock({ $0[script.source] }) { return known }
        let reply = try await connection.send(RESPCommand("SCRIPT", "LOAD", script.source))
        guard let sha = reply.string else { throw RedisError(.unexpectedReply, "SCRIPT LOAD answered \(reply)") }
        shas.withLock { $0[script.source] = sha }
        return sha
    }

    func forget() {
        shas.withLock { $0.removeAll() }
    }
}
