/// The Redis lists kombu keeps for one queue, one per priority step (docs/protocol.md §1.3).
package enum KombuPriorityLists {
    /// `"\x06\x16"`: between a queue name and its priority step, and in binding members.
    package static let separator = "\u{06}\u{16}"
    /// kombu's `priority_steps`.
    package static let steps = [0, 3, 6, 9]

    /// The list holding `queue`'s messages of priority `priority`: the largest step ≤ priority.
    package static func list(queue: String, priority: Int) -> String {
        let step = steps.last(where: { $0 <= max(0, min(priority, 9)) }) ?? 0
        return step == 0 ? queue : queue + separator + String(step)
    }

    /// BRPOP key order: every queue at step 0, then every queue at step 3, ... (0 is the most urgent on Redis).
    package static func lists(queues: [String]) -> [String] {
        steps.flatMap { step in queues.map { step == 0 ? $0 : $0 + separator + String(step) } }
    }
}

extension KombuPriorityLists {
    /// The queue and priority step of one of kombu's lists: `"q"` is `("q", 0)`, `"q\x06\x163"` is `("q", 3)`.
    package static func split(list: String) -> (queue: String, step: Int) {
        // The step is the one digit after the last separator.
        let scalars = Array(list.unicodeScalars)
        guard scalars.count >= 3, scalars[scalars.count - 3] == "\u{06}", scalars[scalars.count - 2] == "\u{16}",
            let step = Int(String(scalars[scalars.count - 1])), step != 0, steps.contains(step)
        else { return (list, 0) }
        var queue = String.UnicodeScalarView()
        queue.append(contentsOf: scalars[..<(scalars.count - 3)])
        return (String(queue), step)
    }
}
