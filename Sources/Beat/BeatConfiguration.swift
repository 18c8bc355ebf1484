/// How a beat process runs. Durations are milliseconds.
public struct BeatConfiguration: Sendable {
    /// The leader lock's time to live; the leader renews it every third of this, and a standby takes over at
    /// most this long after the leader dies. Default 10 s.
    public var lockTimeout: Int64 = 10_000
    /// A missed slot older than this when beat gets to it is skipped instead of run late; nil runs it always
    /// (missed slots collapse into one run either way). The file's `starting_deadline` unless set here.
    public var startingDeadline: Int64?
    /// The longest a leader sleeps between looks at the schedule. Default 1 s.
    public var maximumSleep: Int64 = 1000
    /// How many due entries one step fetches and fires (pipelined).
    public var batchSize = 250
    /// How many history records Redis keeps (0 keeps none). Default 1000.
    public var historyLimit = 1000
    /// The node name in messages' `origin` header.
    public var origin: String
    /// This process's lock token: unique per process.
    public var token: String
    /// Whether beat gives memory back when it goes quiet: its executable's unwritten pages once, after its first
    /// step (the leader's first sync, or a standby's first try for the lock: ``ExecutablePages/release()``), and the
    /// heap's free pages (``ExecutablePages/trimHeap()``) after every step that synced or sent. A sync or a round of
    /// many entries builds large commands that leave the heap fragmented and resident otherwise. Default false (a
    /// library's host decides); `swift-celery beat` turns it on.
    public var releaseMemory = false

    /// Creates a configuration with the defaults above.
    public init(origin: String, token: String) {
        self.origin = origin
        self.token = token
    }

    /// How often the leader renews the lock.
    var renewInterval: Int64 { max(1, lockTimeout / 3) }
    /// How often a standby tries to take the lock.
    var standbyInterval: Int64 { max(50, min(lockTimeout / 4, 1000)) }
}
