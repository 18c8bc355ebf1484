import Synchronization

/// A Lua script, run with `EVALSHA`. The SHA the server gave at `SCRIPT LOAD` is remembered per script value.
public final class RedisScript: Sendable {
    /// The Lua source.
    public let source: String
    private let sha = Mutex<String?>(nil)

    public init(_ source: String) {
        self.source = source
    }

    /// The SHA1 from the last `SCRIPT LOAD`, if any.
    var loadedSHA: String? {
        get { sha.withLock { $0 } }
        set { sha.withLock { $0 = newValue } }
    }
}
