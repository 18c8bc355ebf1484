import CeleryProtocol
import JSON
import Synchronization

/// Stamps revoked by `revoke_by_stamped_headers` (Celery's `worker_state.revoked_stamps`): a task whose message
/// carries a matching stamp is discarded as REVOKED when it is fetched and again before it runs, as Celery's
/// `Request.revoked()` does. Kept in this worker's memory only, as in Celery.
package final class RevokedStamps: Sendable {
    private let stamps = Mutex<[String: [JSONValue]]>([:])

    package init() {}

    /// Adds the stamps of each header to those already revoked under it (a single stamp or a list of them).
    package func add(_ headers: JSONObject) {
        stamps.withLock { stamps in
            for (header, values) in headers {
                stamps[header, default: []] += Self.list(values)
            }
        }
    }

    package var isEmpty: Bool { stamps.withLock { $0.isEmpty } }

    /// The first revoked `{header: stamp}` the message carries, as Celery matches them: each of the message's
    /// `stamped_headers` in order, its value in `stamps` (or each value when it is a list) against the revoked ones.
    package func match(_ message: TaskMessage) -> (header: String, stamp: JSONValue)? {
        guard case .array(let names)? = message.headers["stamped_headers"], !names.isEmpty else { return nil }
        let carried = message.headers["stamps"]?.objectValue ?? [:]
        return stamps.withLock { revoked -> (header: String, stamp: JSONValue)? in
            for case .string(let header) in names {
                guard let values = revoked[header], let stamp = carried[header], stamp != .null else { continue }
                for value in Self.list(stamp) where values.contains(value) {
                    return (header, value)
                }
            }
            return nil
        }
    }

    /// Celery's `maybe_list`: a list as it is, anything else as a list of one.
    package static func list(_ value: JSONValue) -> [JSONValue] {
        if case .array(let items) = value { return items }
        return [value]
    }

    /// The stamps of `headers` that `message` carries, by header (Celery's match for `terminate=True`).
    package static func matching(_ headers: JSONObject, in message: TaskMessage) -> [(String, [JSONValue])] {
        guard case .array(let names)? = message.headers["stamped_headers"] else { return [] }
        let carried = message.headers["stamps"]?.objectValue ?? [:]
        var found: [(String, [JSONValue])] = []
        for (header, expected) in headers where names.contains(.string(header)) {
            guard let actual = carried[header], actual != .null else { continue }
            let wanted = list(expected)
            let common = list(actual).filter { wanted.contains($0) }
            if !common.isEmpty { found.append((header, common)) }
        }
        return found
    }
}

extension WorkerControlState {
    /// Whether the task is revoked: by its id, or by a stamp `revoke_by_stamped_headers` named.
    package func isRevoked(_ message: TaskMessage) -> Bool {
        if revoked.contains(message.id) { return true }
        return !revokedStamps.isEmpty && revokedStamps.match(message) != nil
    }
}
