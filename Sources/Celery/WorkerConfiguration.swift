/// How a worker consumes and runs tasks. Defaults are Celery's.
public struct WorkerConfiguration: Sendable {
    /// Queues to consume (`-Q`), default `celery`. Each also has its priority lists.
    public var queues: [String]
    /// How many tasks run at once (`-c`).
    public var concurrency: Int
    /// The node name (`-n`), default `swift@<host name>`.
    public var hostname: String
    /// `worker_prefetch_multiplier`: at most concurrency × this many messages fetched and not yet finished.
    public var prefetchMultiplier: Int
    /// `result_expires`: the TTL of stored results; nil stores them without expiry.
    public var resultExpires: Duration?
    /// `result_extended`: store name, args, kwargs, worker, retries and queue with each result.
    public var resultExtended: Bool
    /// `task_track_started`: store STARTED before a task runs.
    public var trackStarted: Bool
    /// `task_acks_late`: ack after the result is stored instead of before the task runs.
    public var acksLate: Bool
    /// kombu's `visibility_timeout`: a message recorded in `unacked` longer than this, and not held by a live
    /// worker, is given back to its queue (a dead worker's messages). This worker refreshes what it holds well
    /// within it.
    public var visibilityTimeout: Duration
    /// kombu's transport options `unacked_key`, `unacked_index_key` and `unacked_mutex_key`: where fetched
    /// messages are recorded. Every worker (Python or Swift) sharing queues must use the same names.
    public var unackedKey = "unacked"
    public var unackedIndexKey = "unacked_index"
    public var unackedMutexKey = "unacked_mutex"
    /// How many ETA/countdown messages may wait in memory beyond the prefetch count (the in-memory window). Past
    /// it, the next ones are parked in Redis (``parkETAAfter``); with parking off, a held message then keeps its
    /// prefetch credit, so the worker stops fetching until held messages run.
    public var maximumHeld: Int = 10_000
    /// ETA/countdown messages due further ahead than this are parked in Redis, in a sorted set per queue, instead
    /// of held in memory, and come back to their queue when due within half of it (any worker then takes them).
    /// Memory and prefetch credit stay free however many are scheduled, where Celery holds every one. nil holds
    /// them all in memory, bounded by ``maximumHeld``.
    public var parkETAAfter: Duration? = .seconds(30)
    /// How an idle worker (every list empty at its last pop) waits for the next message.
    public enum IdleFetch: String, Sendable, CaseIterable {
        /// The default. Dedicated connections block in `BLMOVE list list RIGHT RIGHT`, which returns when a message
        /// arrives and leaves it in place; the atomic pop-and-record script then takes it. Low latency, and no
        /// message is ever popped without being recorded, so a `kill -9` at any instant loses nothing. One idle
        /// connection per consumed list (queues × 4 priority steps). Falls back to `poll` when Redis refuses
        /// BLMOVE (before 6.2, or an ACL without `+blmove`).
        case blmove
        /// Polls with the atomic pop script, backing off from 1 ms to `idlePolling`: lossless, one connection, up
        /// to `idlePolling` of latency after an idle spell.
        case poll
        /// Blocks in BRPOP as kombu does: low latency, but a crash between the pop and the record (two round
        /// trips) loses that message.
        case brpop
    }

    /// How an idle worker waits for messages (`--idle-fetch`).
    public var idleFetch: IdleFetch = .blmove
    /// The longest pause between two polls with `idleFetch = .poll` (and after a BLMOVE refusal).
    public var idlePolling: Duration = .milliseconds(25)
    /// `-E` / `worker_send_task_events`: publish task events for monitors (Flower, `celery events`).
    public var taskEvents = false
    /// Give the page cache back the pages of the program's own executable that it mapped and never wrote
    /// (``ExecutablePages``): a second after the worker is ready (start-up's code), and again once it has taken no
    /// message for ``idlePageRelease`` after taking some (checked every ``idlePageRelease``, so within twice that;
    /// then with the free heap, `malloc_trim`). An idle worker keeps only the code it
    /// runs again. Off for a library embedding the worker; the `worker` command turns it on (`--keep-pages`).
    public var releasePages = false
    /// How long without a task before ``releasePages`` releases again.
    public var idlePageRelease: Duration = .seconds(30)
    /// A message that comes alone to an otherwise idle worker runs on the event loop that read it, its handler
    /// too if the handler's recent runs took less than this (and it has no time limit): no thread is woken to run
    /// it or to write its result. A handler that then computes for longer holds up the worker's Redis I/O on that
    /// loop meanwhile. nil or zero: handlers never run on the loop (the rest of such a message still does).
    public var inlineHandlerLimit: Duration? = .milliseconds(1)
    /// Seconds between `worker-heartbeat` events (Celery's 2 s); nil sends none (`--without-heartbeat`).
    public var heartbeatInterval: Duration? = .seconds(2)
    /// How long one idle BRPOP or BLMOVE waits before the worker checks for shutdown and queue changes again
    /// (kombu uses 1 s).
    public var idlePollTimeout: Duration
    /// Messages longer than this many bytes are refused before they are parsed (0: no limit). The pop script
    /// measures them in Redis, so they never cross the connection: each goes to the dead-letter list, and a
    /// FAILURE (`kombu.exceptions.LimitExceeded`) is stored when its task id is found in its first or last 64 KiB.
    public var maximumMessageSize: Int = WorkerConfiguration.defaultMaximumMessageSize
    /// 64 MiB: far above any task message Celery writes (a 10 MB argument runs), far below Redis's 512 MB.
    public static let defaultMaximumMessageSize = 64 << 20
    /// Answer `celery inspect` / `celery control` on the pidbox channel (Celery's remote control; on by default).
    public var remoteControl = true
    /// The crash guard (`--max-crashes`): with `acksLate`, a message whose handler was running each time its worker
    /// died this many times is failed with `WorkerLostError` (errbacks run, a copy dead-lettered) instead of being
    /// delivered again, so a handler that traps cannot crash every worker in turn. 0 turns the guard off.
    public var maximumCrashes = WorkerConfiguration.defaultMaximumCrashes
    /// Sidekiq Pro's count: two crashes may be bad luck (a deploy, the OOM killer), three are the message.
    public static let defaultMaximumCrashes = 3
    /// The hash of the crash guard's running marks (delivery tag → worker), and that of its crash counts.
    public var runningKey = "swift-celery:running"
    public var crashCountKey = "swift-celery:crashes"
    /// The sorted set of revoked task ids shared by every worker (member: id, score: Unix time of the revoke).
    public var revokedKey = "swift-celery:revoked"
    /// Prefix of the keys that hold each task's next global rate-limit slot.
    public var globalRateLimitKeyPrefix = "swift-celery:rate:"

    public init(
        queues: [String] = ["celery"],
        concurrency: Int = 8,
        hostname: String = WorkerConfiguration.defaultHostname(),
        prefetchMultiplier: Int = 4,
        resultExpires: Duration? = .seconds(86400),
        resultExtended: Bool = false,
        trackStarted: Bool = false,
        acksLate: Bool = false,
        visibilityTimeout: Duration = .seconds(3600),
        idlePollTimeout: Duration = .seconds(1)
    ) {
        self.queues = queues
        self.concurrency = concurrency
        self.hostname = hostname
        self.prefetchMultiplier = prefetchMultiplier
        self.resultExpires = resultExpires
        self.resultExtended = resultExtended
        self.trackStarted = trackStarted
        self.acksLate = acksLate
        self.visibilityTimeout = visibilityTimeout
        self.idlePollTimeout = idlePollTimeout
    }

    /// `swift@<gethostname()>`.
    public static func defaultHostname() -> String { "swift@" + HostName.current() }

    /// prefetch_count = concurrency × multiplier (a multiplier of 0 means one message per slot).
    public var prefetchCount: Int { concurrency * max(1, prefetchMultiplier) }
}
