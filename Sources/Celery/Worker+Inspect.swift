import CeleryProtocol
import JSON

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The answers of `inspect registered` with `taskinfoitems`, `inspect report` and `revoke_by_stamped_headers`, in
/// Celery 5.7's shapes (celery/worker/control.py).
extension Worker {
    /// `str()` of the Celery `Task` attribute `field` for `task`, as Python's worker shows it in `registered`; nil
    /// where Python's value is None (the field is left out) or `Task` has no such attribute.
    package func taskAttribute(_ field: String, of task: RegisteredTask) -> String? {
        func python(_ flag: Bool) -> String { flag ? "True" : "False" }
        func seconds(_ value: Double?) -> String? {
            guard let value else { return nil }
            return value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
        }
        let override = control.timeLimits(for: task.name)
        switch field {
        case "name": return task.name
        case "typing", "trail", "send_events": return "True"
        case "max_retries":
            guard let autoretry = task.options.autoretry else { return "3" }
            return autoretry.maxRetries.map { String($0) }
        case "default_retry_delay": return "180"
        case "rate_limit": return control.localRates.limit(for: task.name).map(\.text)
        case "ignore_result": return python(task.options.ignoreResult)
        case "store_errors_even_if_ignored": return "False"
        case "serializer": return "json"
        case "time_limit":
            if let override { return seconds(override.hard) }
            return seconds(task.options.timeLimit.map(WorkerControlTarget.seconds))
        case "soft_time_limit":
            if let override { return seconds(override.soft) }
            return seconds(task.options.softTimeLimit.map(WorkerControlTarget.seconds))
        case "track_started": return python(configuration.trackStarted)
        case "acks_late": return python(configuration.acksLate)
        case "acks_on_failure_or_timeout": return "True"
        case "throws": return "()"
        case "resultrepr_maxsize": return "1024"
        default: return nil
        }
    }

    /// Celery's `bugreport()` text for `inspect report`: the software, the platform, the transport and result
    /// backend, then the settings one per line (`key: repr(value)`).
    package func bugReport(settings: JSONValue) -> String {
        var system = "unknown"
        var release = "unknown"
        var names = utsname()
        if uname(&names) == 0 {
            system = withUnsafeBytes(of: names.sysname) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            release = withUnsafeBytes(of: names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        let human = (settings.objectValue ?? [:]).map { "\($0.key): \(PythonText.repr($0.value))" }
        return """

            software -> celery:5.7.0 (\(CeleryEvent.softwareIdentity)) \(CeleryEvent.softwareIdentity):\
            \(CeleryEvent.softwareVersion)
                        protocol:2 redis
            platform -> system:\(system) arch:\(MemoryLayout<Int>.size * 8)bit
                        kernel version:\(release) imp:Swift
            loader   -> \(CeleryEvent.softwareIdentity)
            settings -> transport:redis results:\(backendClient.configuration.redactedURL)

            \(human.joined(separator: "\n"))

            """
    }

    /// Revokes stamps for `revoke_by_stamped_headers`; with `terminate`, cancels the running tasks that carry one
    /// of them and returns the stamps matched, by header (Celery's terminated mapping).
    package func revokeStamps(_ headers: JSONObject, terminate: Bool) -> [(header: String, stamps: [JSONValue])] {
        control.revokedStamps.add(headers)
        logger.info("tasks flagged as revoked by stamped headers: \(PythonText.repr(.object(headers)))")
        guard terminate else { return [] }
        var matched: [(header: String, stamps: [JSONValue])] = []
        var ids: [String] = []
        for entry in control.active.snapshot {
            let found = RevokedStamps.matching(headers, in: entry.message)
            guard !found.isEmpty else { continue }
            ids.append(entry.message.id)
            for (header, stamps) in found {
                if let index = matched.firstIndex(where: { $0.header == header }) {
                    for stamp in stamps where !matched[index].stamps.contains(stamp) {
                        matched[index].stamps.append(stamp)
                    }
                } else {
                    matched.append((header, stamps))
                }
            }
        }
        for id in control.active.terminate(ids) { logger.info("terminating \(id)") }
        return matched
    }
}
