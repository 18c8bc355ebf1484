import CeleryProtocol
import CeleryRedis
import JSON
import RESP
import Redis

/// Group, chord and chain signatures inside a canvas (`celery.group`, `celery.chord`, `celery.chain`, marked by
/// `subtask_type`), as chain steps, link callbacks or chord bodies: `chain(add.s(1, 2), group(add.s(1),
/// mul.s(2)), xsum.s())` reaches the worker as a chain whose next step is a chord.
extension Worker {
    /// What publishing one signature takes: its messages, its entry in the parent's `children`, and the chords
    /// whose size must be stored before the messages go out.
    package struct Expansion: Sendable {
        package var tasks: [OutgoingTask] = []
        package var child: JSONValue = .null
        package var chordSizes: [ChordSize] = []
    }

    package struct ChordSize: Sendable {
        package var groupID: String
        package var size: Int
    }

    /// The messages for `signature` published by `origin` with `argument` prepended (unless immutable or nil); `rest` is
    /// what remains of the enclosing chain (reversed, next step last), run after this signature. Nil when the
    /// signature cannot be published (logged).
    package func expand(
        _ signature: JSONValue,
        prepending argument: JSONValue?,
        from origin: FollowUpOrigin,
        rest: [JSONValue] = []
    ) -> Expansion? {
        if rest.isEmpty, !Self.isTaskSignature(signature), case .array(let own)? = signature["options"]?["chain"],
            !own.isEmpty
        {
            // A canvas that carries the rest of its chain in its options (a chord that is the body of a chord in a
            // chain: Celery's chord.run hands the chain to its body) runs it after its own result.
            let own = Array(own)
            return expand(
                Signature.setting("chain", to: .null, in: signature),
                prepending: argument,
                from: origin,
                rest: own
            )
        }
        switch signature["subtask_type"]?.stringValue ?? "" {
        case "", "xmap", "xstarmap":
            // `add.map(...)` and `add.starmap(...)` are plain `celery.map` / `celery.starmap` tasks (BuiltinTasks).
            guard var task = followUp(signature, prepending: argument, from: origin) else { return nil }
            if !rest.isEmpty { task.chain = rest }
            return Expansion(tasks: [task], child: [[.string(task.id), .null], .null])
        case "chain":
            var steps = Self.signatures(signature["kwargs"]?["tasks"])
            // Celery's chain.run: the chain's own link_error goes on every step, its link on the last one.
            let errbacks = Self.signatures(signature["options"]?["link_error"])
            if !errbacks.isEmpty {
                steps = steps.map { Signature.appending(errbacks, to: "link_error", of: $0) }
            }
            let callbacks = Self.signatures(signature["options"]?["link"])
            if !callbacks.isEmpty, let last = steps.popLast() {
                steps.append(Signature.appending(callbacks, to: "link", of: last))
            }
            guard let first = steps.first else { return nil }
            return expand(first, prepending: argument, from: origin, rest: rest + steps.dropFirst().reversed())
        case "group":
            if let next = rest.last {
                // Celery's chain turns a group followed by another step into a chord with that step as its body;
                // the steps after it follow the body.
                return expand(
                    Signature.settingKwarg("header", to: signature, in: Canvas.chord([], body: next)),
                    prepending: argument,
                    from: origin,
                    rest: Array(rest.dropLast())
                )
            }
            let groupID =
                signature["options"]?["task_id"]?.stringValue ?? signature["options"]?["group_id"]?.stringValue
                ?? OutgoingTask.newID()
            let members = members(
                of: Self.passingOptions(of: signature),
                prepending: argument,
                from: origin,
                groupID: groupID
            )
            return Expansion(
                tasks: members.flatMap(\.tasks),
                child: [[.string(groupID), .null], .array(members.map { [[.string($0.resultID), .null], .null] })],
                chordSizes: members.flatMap(\.chordSizes)
            )
        case "chord":
            let header = signature["kwargs"]?["header"] ?? .null
            guard case .object(var body)? = signature["kwargs"]?["body"] else {
                logger.error("a chord signature without a body", metadata: ["celery.task.id": "\(origin.parentID)"])
                return nil
            }
            let groupID =
                header["options"]?["task_id"]?.stringValue ?? signature["options"]?["task_id"]?.stringValue
                ?? OutgoingTask.newID()
            var options = body["options"]?.objectValue ?? [:]
            // Celery's chord.run gives the chord's own options to its body: a chord added to an outer chord
            // (`add_to_chord`) takes the outer group, group index and chord there.
            for key in ["group_id", "group_index", "chord"] {
                if let value = signature["options"]?[key], !value.isNull { options[key] = value }
            }
            // A chord's own link and link_error are its body's (Celery's chord.link / link_error).
            for key in ["link", "link_error"] {
                let added = Self.signatures(signature["options"]?[key])
                guard !added.isEmpty else { continue }
                options[key] = .array(Self.signatures(options[key]) + added)
            }
            let bodyID = options["task_id"]?.stringValue ?? OutgoingTask.newID()
            options["task_id"] = .string(bodyID)
            // Unless the body already belongs to a group: a task replaced by a chord keeps its own group and chord
            // membership on the body (Celery's `freeze` sets a group id only where there is none).
            if options["group_id"] == nil || options["group_id"] == .null { options["group_id"] = .string(groupID) }
            if !rest.isEmpty { options["chain"] = .array(rest) }
            body["options"] = .object(options)
            let members = members(
                of: header,
                prepending: argument,
                from: origin,
                groupID: groupID,
                chord: .object(body)
            )
            guard !members.isEmpty else {
                // An empty header: Celery calls the body at once with an empty list.
                return expand(.object(body), prepending: [], from: origin)
            }
            return Expansion(
                tasks: members.flatMap(\.tasks),
                child: [[.string(bodyID), .null], .null],
                chordSizes: [ChordSize(groupID: groupID, size: members.count)] + members.flatMap(\.chordSizes)
            )
        case "chunks":
            // Celery sends `add.chunks(it, n)` as a group of `celery.starmap` tasks of n items each.
            return expand(BuiltinTasks.chunksGroup(of: signature), prepending: argument, from: origin, rest: rest)
        case let other:
            logger.error(
                "cannot publish a \(other) signature as a follow-up",
                metadata: ["celery.task.id": "\(origin.parentID)"]
            )
            return nil
        }
    }

    /// A group member as sent: its first messages (a chord's header tasks), the id of the result it gives (a chain's
    /// last task, a chord's body) and the sizes of the chords it starts.
    package struct Member: Sendable {
        package var tasks: [OutgoingTask]
        package var resultID: String
        package var chordSizes: [ChordSize] = []
    }

    /// The options a group passes on to its members when it is applied (Celery's `group.apply_async` gives its own
    /// options to each member's `apply_async`, where they replace the member's): a group's `link_error` replaces
    /// its tasks' errbacks. The group's id, its membership and its parents are not passed: the group sets them.
    package static func passingOptions(of group: JSONValue) -> JSONValue {
        let kept: Set<String> = ["task_id", "group_id", "group_index", "chord", "root_id", "parent_id", "reply_to"]
        let passed = (group["options"]?.objectValue ?? [:]).filter { !kept.contains($0.key) && !$0.value.isNull }
        guard !passed.isEmpty else { return group }
        let members = signatures(group["kwargs"]?["tasks"]).map { Canvas.setting(passed, on: $0) }
        return Signature.settingKwarg("tasks", to: .array(members), in: group)
    }

    /// The members of a group signature (or a plain list of signatures), each with `argument` prepended; `chord`:
    /// the body of the chord whose header they are. A member that is a chain runs as one: its first task goes out
    /// now, and its last one (sent by the worker that runs the step before) carries the group id, index and chord,
    /// as Celery's `chain.freeze(group_id=..., group_index=...)` puts them there.
    private func members(
        of group: JSONValue,
        prepending argument: JSONValue?,
        from origin: FollowUpOrigin,
        groupID: String,
        chord: JSONValue? = nil
    ) -> [Member] {
        let signatures = group.arrayValue ?? Self.signatures(group["kwargs"]?["tasks"])
        let immutable = group["immutable"]?.boolValue == true
        var members: [Member] = []
        for (index, member) in signatures.enumerated() {
            var member = member
            if immutable, case .object(var object) = member {
                object["immutable"] = true
                member = .object(object)
            }
            let groupIndex = member["options"]?["group_index"]?.intValue ?? index
            let membership: JSONObject = [
                "group_id": .string(groupID), "group_index": .int(groupIndex), "chord": chord ?? .null,
            ]
            switch member["subtask_type"]?.stringValue {
            case "chain":
                if let chained = chainMember(member, prepending: argument, from: origin, membership: membership) {
                    members.append(chained)
                    continue
                }
            case "chord":
                // A chord in a group gives its result through its body, which joins the group (Celery's
                // chord.run hands the chord's group options to its body); in a chord header the body is the
                // member that returns the part, one part as Celery's `_descend` counts it.
                let options = membership.filter { !$0.value.isNull }
                if let expansion = expand(Canvas.setting(options, on: member), prepending: argument, from: origin),
                    !expansion.tasks.isEmpty, let resultID = expansion.child[0]?[0]?.stringValue
                {
                    members.append(
                        Member(tasks: expansion.tasks, resultID: resultID, chordSizes: expansion.chordSizes)
                    )
                    continue
                }
            default:
                if Self.isTaskSignature(member),
                    var task = expand(member, prepending: argument, from: origin)?.tasks.first
                {
                    // A task frozen as a part of an outer chord (the group ends a chain in that chord's header)
                    // keeps its group and chord: Celery's group_id is an immutable option.
                    if chord != nil || !Self.isChordPart(member) {
                        task.groupID = groupID
                        task.groupIndex = groupIndex
                        if let chord { task.chord = chord }
                    }
                    members.append(Member(tasks: [task], resultID: task.id))
                    continue
                }
            }
            logger.error(
                "only tasks, chains and chords are supported inside a nested group; skipping a member",
                metadata: ["celery.task.id": "\(origin.parentID)"]
            )
        }
        return members
    }

    /// A chain inside a group or chord header: the membership options go on its last task (with an id, the
    /// member's result), the first task is expanded with the rest of the chain after it. Nil when the chain is
    /// empty or does not start with a task.
    private func chainMember(
        _ chain: JSONValue,
        prepending argument: JSONValue?,
        from origin: FollowUpOrigin,
        membership: JSONObject
    ) -> Member? {
        var steps = Self.signatures(chain["kwargs"]?["tasks"])
        guard let first = steps.first, Self.isTaskSignature(first), var last = steps.popLast(),
            Self.isTaskSignature(last)
        else { return nil }
        let resultID = last["options"]?["task_id"]?.stringValue ?? OutgoingTask.newID()
        var options = membership.filter { !$0.value.isNull }
        options["task_id"] = .string(resultID)
        last = Canvas.setting(options, on: last)
        // The chain on the wire is reversed, next step last: [last, ..., second].
        let expansion =
            steps.isEmpty
            ? expand(last, prepending: argument, from: origin)
            : expand(first, prepending: argument, from: origin, rest: [last] + steps.dropFirst().reversed())
        guard let expansion, let task = expansion.tasks.first, expansion.tasks.count == 1 else { return nil }
        return Member(tasks: [task], resultID: resultID)
    }

    /// Whether a signature was frozen as a part of a chord: its options name the group and the chord's body.
    package static func isChordPart(_ signature: JSONValue) -> Bool {
        guard let options = signature["options"], options["group_id"]?.stringValue != nil,
            case .object = options["chord"]
        else { return false }
        return true
    }

    /// Whether `signature` is sent as one task message: a task, or `add.map(...)` / `add.starmap(...)`.
    package static func isTaskSignature(_ signature: JSONValue) -> Bool {
        switch signature["subtask_type"]?.stringValue ?? "" {
        case "", "xmap", "xstarmap": true
        default: false
        }
    }

    /// `kwargs.tasks` of a group or chain signature: a list, or (from some clients) a single signature.
    package static func signatures(_ value: JSONValue?) -> [JSONValue] {
        switch value {
        case .array(let items)?: return items
        case .object(let one)?: return [.object(one)]
        default: return []
        }
    }

    /// Stores the size of chords about to be published (and clears a stale claim), as a client does before the
    /// last header task goes out.
    package func storeChordSizes(_ sizes: [ChordSize]) async throws(RedisError) {
        guard !sizes.isEmpty else { return }
        var commands: [RESPCommand] = []
        for size in sizes {
            let chord = RedisChord(groupID: size.groupID)
            commands.append(RESPCommand("DEL", chord.claimKey))
            if results.resultTTL > 0 {
                commands.append(RESPCommand("SET", chord.sizeKey, String(size.size), "EX", String(results.resultTTL)))
            } else {
                commands.append(RESPCommand("SET", chord.sizeKey, String(size.size)))
            }
        }
        for reply in try await backendClient.pipeline(commands) { _ = try reply.get() }
    }
}
