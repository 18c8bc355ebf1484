/// What to do with an entry found due: the pure decision, apart from Redis.
public struct BeatPlan: Sendable, Equatable {
    /// Push a message now (false: the slot is past the starting deadline and is skipped).
    public var send: Bool
    /// The entry's next due time, strictly after `now`; nil when it never runs again.
    public var nextDue: Int64?
    /// More than one slot had passed: they collapse into this one run.
    public var collapsed: Bool

    public init(send: Bool, nextDue: Int64?, collapsed: Bool) {
        self.send = send
        self.nextDue = nextDue
        self.collapsed = collapsed
    }

    /// The plan for an entry due at `due` (≤ `now`): one run stands for every slot up to `now`, unless even the
    /// latest of them is older than `startingDeadline`; the next due time is the first slot after `now`, so
    /// missed slots are never run one by one.
    public static func make(schedule: BeatSchedule, due: Int64, now: Int64, startingDeadline: Int64?) -> BeatPlan {
        let nextDue = schedule.next(after: max(now, due), anchor: due)
        let following = schedule.next(after: due, anchor: due)
        let collapsed = following.map { $0 <= now } ?? false
        var send = true
        if let deadline = startingDeadline, now - due > deadline {
            // Is there a slot within [now - deadline, now]? The latest missed slot is the one that counts.
            if let slot = schedule.next(after: now - deadline - 1, anchor: due) {
                send = slot <= now
            } else {
                send = false
            }
        }
        return BeatPlan(send: send, nextDue: nextDue, collapsed: collapsed)
    }
}
