import CeleryProtocol
import Foundation
import JSON
import Yams

/// A schedule file (YAML, or JSON, which YAML reads too): the entries beat runs, and its settings.
///
/// ```yaml
/// timezone: Europe/Berlin        # crontabs' zone unless an entry names its own (default UTC)
/// starting_deadline: 1h          # optional: a missed slot older than this is skipped, not run late
/// entries:
///   - name: add-every-30s
///     task: tasks.add
///     schedule: 30s              # 30, "30s", "5m", "1h", "1h30m", or {every: 30}
///     args: [2, 3]
///   - name: nightly-report
///     task: reports.nightly
///     schedule: {crontab: "0 3 * * mon-fri", timezone: America/New_York}
///     kwargs: {format: pdf}
///     options: {queue: reports, priority: 5, expires: 3600, headers: {x-team: data}}
///     enabled: true
/// ```
public struct BeatScheduleFile: Sendable, Equatable {
    /// The entries in file order, names unique.
    public var entries: [BeatEntry]
    /// `starting_deadline`: a missed slot older than this (ms) at the time beat gets to it is skipped.
    public var startingDeadline: Int64?

    /// Creates a schedule from entries.
    public init(entries: [BeatEntry], startingDeadline: Int64? = nil) {
        self.entries = entries
        self.startingDeadline = startingDeadline
    }

    /// Reads and parses the file at `path`; the error names the file, the entry and the field.
    public static func load(path: String) throws(BeatError) -> BeatScheduleFile {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw BeatError(.unreadableFile, "cannot read schedule file \(path): \(error.localizedDescription)")
        }
        do {
            return try parse(text)
        } catch {
            throw BeatError(error.code, "schedule file \(path): \(error.message)")
        }
    }

    /// Parses YAML or JSON text.
    public static func parse(_ text: String) throws(BeatError) -> BeatScheduleFile {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw BeatError(.invalidSchedule, "not valid YAML or JSON: \(error)")
        }
        guard let root else { throw BeatError(.invalidSchedule, "the file is empty; it must list entries") }
        var parser = Parser()
        return try parser.file(root)
    }

    private static let entryKeys: Set<String> = ["name", "task", "schedule", "args", "kwargs", "options", "enabled"]
    private static let optionKeys: Set<String> = [
        "queue", "priority", "expires", "headers", "time_limit", "soft_time_limit",
    ]
    private static let crontabKeys: Set<String> = [
        "crontab", "minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone",
    ]

    private struct Parser {
        var defaultTimeZone = TimeZone(identifier: "UTC")!

        mutating func file(_ root: Node) throws(BeatError) -> BeatScheduleFile {
            let entriesNode: Node
            var deadline: Int64?
            switch root {
            case .sequence:
                entriesNode = root
            case .mapping(let mapping):
                let known: Set<String> = ["entries", "timezone", "starting_deadline"]
                try refuseUnknownKeys(
                    of: mapping,
                    known: known,
                    entry: nil,
                    why: "unknown top-level key; expected \(list(known))"
                )
                if let zone = root["timezone"] { defaultTimeZone = try timeZone(zone, entry: nil, field: "timezone") }
                if let value = root["starting_deadline"], value.null == nil {
                    deadline = try duration(value, entry: nil, field: "starting_deadline")
                }
                guard let entries = root["entries"] else {
                    throw failure(nil, root, "entries", "missing; the file must list its entries under 'entries'")
                }
                entriesNode = entries
            default:
                throw failure(nil, root, "(top level)", "must be a mapping with 'entries', or a list of entries")
            }
            var entries: [BeatEntry] = []
            var seen: Set<String> = []
            switch entriesNode {
            case .sequence(let items):
                for item in items {
                    let name = item["name"]?.string
                    let entry = try self.entry(item, name: name)
                    guard seen.insert(entry.name).inserted else {
                        throw failure(entry.name, item, "name", "is used by another entry; names must be unique")
                    }
                    entries.append(entry)
                }
            case .mapping(let mapping):
                for (key, value) in mapping {
                    guard let name = key.string else {
                        throw failure(nil, key, "entries", "entry names must be strings")
                    }
                    if let inner = value["name"]?.string, inner != name {
                        throw failure(name, value, "name", "'\(inner)' differs from the entry's key '\(name)'")
                    }
                    entries.append(try self.entry(value, name: name))
                    seen.insert(name)
                }
            case .scalar where entriesNode.tagName == .null:
                break
            default:
                throw failure(nil, entriesNode, "entries", "must be a list of entries or a mapping of name to entry")
            }
            return BeatScheduleFile(entries: entries, startingDeadline: deadline)
        }

        func entry(_ node: Node, name: String?) throws(BeatError) -> BeatEntry {
            guard case .mapping(let mapping) = node else {
                throw failure(name, node, "(entry)", "must be a mapping with name, task and schedule")
            }
            try refuseUnknownKeys(
                of: mapping,
                known: BeatScheduleFile.entryKeys,
                entry: name,
                why: "unknown field; expected \(list(BeatScheduleFile.entryKeys))"
            )
            guard let name, !name.isEmpty else {
                throw failure(nil, node, "name", "missing or empty; every entry needs a unique name")
            }
            guard let taskNode = node["task"] else { throw failure(name, node, "task", "missing") }
            guard case .scalar = taskNode, taskNode.tagName == .str, let task = taskNode.string, !task.isEmpty else {
                throw failure(name, taskNode, "task", "must be a non-empty task name")
            }
            guard let scheduleNode = node["schedule"] else { throw failure(name, node, "schedule", "missing") }
            var entry = BeatEntry(name: name, task: task, schedule: try schedule(scheduleNode, entry: name))
            if let argsNode = node["args"], argsNode.null == nil {
                guard case .array(let args) = try json(argsNode, entry: name, field: "args") else {
                    throw failure(name, argsNode, "args", "must be a list")
                }
                entry.args = args
            }
            if let kwargsNode = node["kwargs"], kwargsNode.null == nil {
                guard case .object(let kwargs) = try json(kwargsNode, entry: name, field: "kwargs") else {
                    throw failure(name, kwargsNode, "kwargs", "must be a mapping")
                }
                entry.kwargs = kwargs
            }
            if let enabled = node["enabled"] {
                guard enabled.tagName == .bool, let flag = enabled.bool else {
                    throw failure(name, enabled, "enabled", "must be true or false")
                }
                entry.enabled = flag
            }
            if let options = node["options"], options.null == nil {
                try self.options(options, into: &entry)
            }
            return entry
        }

        func options(_ node: Node, into entry: inout BeatEntry) throws(BeatError) {
            let name = entry.name
            guard case .mapping(let mapping) = node else {
                throw failure(name, node, "options", "must be a mapping")
            }
            try refuseUnknownKeys(
                of: mapping,
                known: BeatScheduleFile.optionKeys,
                entry: name,
                prefix: "options.",
                why: "unknown option; expected \(list(BeatScheduleFile.optionKeys))"
            )
            if let queue = node["queue"] {
                guard queue.tagName == .str, let text = queue.string, !text.isEmpty else {
                    throw failure(name, queue, "options.queue", "must be a non-empty queue name")
                }
                entry.queue = text
            }
            if let priority = node["priority"] {
                guard priority.tagName == .int, let value = priority.int, (0...9).contains(value) else {
                    throw failure(name, priority, "options.priority", "must be an integer from 0 to 9")
                }
                entry.priority = value
            }
            if let expires = node["expires"] {
                if expires.tagName == .int || expires.tagName == .float, let seconds = expires.float,
                    seconds.isFinite, seconds > 0
                {
                    entry.expires = .after(seconds: seconds)
                } else if let text = expires.string, let instant = CeleryTimestamp(iso8601: text) {
                    entry.expires = .at(instant)
                } else {
                    throw failure(
                        name,
                        expires,
                        "options.expires",
                        "must be positive seconds or an ISO-8601 date-time"
                    )
                }
            }
            if let headers = node["headers"] {
                guard case .object(let object) = try json(headers, entry: name, field: "options.headers") else {
                    throw failure(name, headers, "options.headers", "must be a mapping")
                }
                entry.headers = object
            }
            let limits: [(String, WritableKeyPath<BeatEntry, Double?>)] = [
                ("time_limit", \.timeLimit), ("soft_time_limit", \.softTimeLimit),
            ]
            for (field, keyPath) in limits {
                if let value = node[field] {
                    guard value.tagName == .int || value.tagName == .float, let seconds = value.float,
                        seconds.isFinite, seconds > 0
                    else {
                        throw failure(name, value, "options.\(field)", "must be a positive number of seconds")
                    }
                    entry[keyPath: keyPath] = seconds
                }
            }
        }

        func schedule(_ node: Node, entry: String) throws(BeatError) -> BeatSchedule {
            switch node {
            case .scalar:
                return .interval(milliseconds: try duration(node, entry: entry, field: "schedule"))
            case .mapping(let mapping):
                if let every = node["every"] {
                    guard mapping.count == 1 else {
                        throw failure(entry, node, "schedule", "'every' cannot be combined with other keys")
                    }
                    return .interval(milliseconds: try duration(every, entry: entry, field: "schedule.every"))
                }
                try refuseUnknownKeys(
                    of: mapping,
                    known: BeatScheduleFile.crontabKeys,
                    entry: entry,
                    prefix: "schedule.",
                    why: "unknown key; a schedule is an interval, {every: ...}, or a crontab with "
                        + list(BeatScheduleFile.crontabKeys)
                )
                let zone = try node["timezone"].map { (zone) throws(BeatError) in
                    try timeZone(zone, entry: entry, field: "schedule.timezone")
                }
                if let expression = node["crontab"] {
                    guard mapping.count <= 2, expression.tagName == .str, let text = expression.string else {
                        throw failure(
                            entry,
                            expression,
                            "schedule.crontab",
                            "must be a 5-field cron string, with at most a timezone beside it"
                        )
                    }
                    do {
                        return .crontab(try Crontab(expression: text, timeZone: zone ?? defaultTimeZone))
                    } catch {
                        throw failure(entry, expression, "schedule.crontab", error.message)
                    }
                }
                var fields: [String: String] = [:]
                for field in ["minute", "hour", "day_of_week", "day_of_month", "month_of_year"] {
                    guard let value = node[field] else { continue }
                    guard case .scalar = value, let text = value.string else {
                        throw failure(entry, value, "schedule.\(field)", "must be a string or a number")
                    }
                    fields[field] = text
                }
                guard !fields.isEmpty else {
                    throw failure(entry, node, "schedule", "a crontab needs at least one of minute, hour, ...")
                }
                do {
                    return .crontab(
                        try Crontab(
                            minute: fields["minute"] ?? "*",
                            hour: fields["hour"] ?? "*",
                            dayOfWeek: fields["day_of_week"] ?? "*",
                            dayOfMonth: fields["day_of_month"] ?? "*",
                            monthOfYear: fields["month_of_year"] ?? "*",
                            timeZone: zone ?? defaultTimeZone
                        )
                    )
                } catch {
                    throw failure(entry, node, "schedule.\(error.message)", nil)
                }
            default:
                throw failure(entry, node, "schedule", "must be an interval (30, \"5m\") or a mapping (crontab, every)")
            }
        }

        func duration(_ node: Node, entry: String?, field: String) throws(BeatError) -> Int64 {
            guard case .scalar = node, let text = node.string, node.tagName != .null else {
                throw failure(entry, node, field, "must be a number of seconds or a duration such as 30s, 5m, 1h")
            }
            do {
                return try BeatSchedule.parseInterval(text)
            } catch {
                throw failure(entry, node, field, error.message)
            }
        }

        func timeZone(_ node: Node, entry: String?, field: String) throws(BeatError) -> TimeZone {
            guard node.tagName == .str, let name = node.string, let zone = TimeZone(identifier: name) else {
                throw failure(
                    entry,
                    node,
                    field,
                    "'\(node.string ?? "")' is not a known time zone (e.g. Europe/Berlin)"
                )
            }
            return zone
        }

        func json(_ node: Node, entry: String, field: String) throws(BeatError) -> JSONValue {
            switch node {
            case .scalar(let scalar):
                switch node.tagName {
                case .null: return .null
                case .bool: if let value = node.bool { return .bool(value) }
                case .int: if let value = node.int { return .int(value) }
                case .float:
                    if let value = node.float, value.isFinite { return .double(value) }
                    throw failure(entry, node, field, "holds '\(scalar.string)', which JSON cannot carry")
                default: return .string(scalar.string)
                }
                return .string(scalar.string)
            case .sequence(let items):
                var values: [JSONValue] = []
                for item in items { values.append(try json(item, entry: entry, field: field)) }
                return .array(values)
            case .mapping(let mapping):
                var object: JSONObject = [:]
                for (key, value) in mapping {
                    guard case .scalar(let scalar) = key else {
                        throw failure(entry, key, field, "has a key that is not a string")
                    }
                    object[scalar.string] = try json(value, entry: entry, field: field)
                }
                return .object(object)
            case .alias:
                throw failure(entry, node, field, "uses an alias, which is not supported")
            }
        }

        func describe(_ node: Node) -> String { node.string ?? "\(node)" }

        /// Throws for the first key of `mapping` not in `known`, naming it as `prefix` + the key.
        func refuseUnknownKeys(
            of mapping: Node.Mapping,
            known: Set<String>,
            entry: String?,
            prefix: String = "",
            why: String
        ) throws(BeatError) {
            for key in mapping.keys {
                guard let field = key.string, known.contains(field) else {
                    throw failure(entry, key, prefix + describe(key), why)
                }
            }
        }

        func list(_ keys: Set<String>) -> String { keys.sorted().joined(separator: ", ") }

        func failure(_ entry: String?, _ node: Node, _ field: String, _ why: String?) -> BeatError {
            var text = entry.map { "entry '\($0)'" } ?? "schedule"
            if let line = node.mark?.line { text += " (line \(line))" }
            text += ": \(field)"
            if let why { text += ": \(why)" }
            return BeatError(.invalidSchedule, text)
        }
    }
}

extension Node {
    /// The resolved tag (`str`, `int`, `float`, `bool`, `null`, ...) of a composed node.
    fileprivate var tagName: Tag.Name { Tag.Name(rawValue: tag.description) }
}
