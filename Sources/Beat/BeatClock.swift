import JSON

/// Where beat gets the time and how it waits; tests inject a clock of their own.
public protocol BeatClock: Sendable {
    /// Milliseconds since 1970.
    func now() -> Int64
    /// Returns at `deadline` (milliseconds since 1970) or later; throws when cancelled.
    func sleep(until deadline: Int64) async throws
}

/// The system's wall clock.
public struct SystemBeatClock: BeatClock {
    public init() {}

    public func now() -> Int64 {
        Int64((CeleryTimestamp.now().secondsSince1970 * 1000).rounded(.down))
    }

    public func sleep(until deadline: Int64) async throws {
        let wait = deadline - now()
        if wait > 0 { try await Task.sleep(for: .milliseconds(wait)) }
    }
}
