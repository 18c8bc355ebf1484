import CeleryProtocol
import CeleryRedis
import ExtrasBase64
import JSON
import Logging
import NIOCore
import RESP
import Redis

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension Worker {
    /// Connects the control commands `enable_events`, `disable_events` and `heartbeat` to an event dispatcher.
    public func setControlHooks(_ hooks: ControlHooks) {
        control.hooks = hooks
    }

    /// The pidbox channel: kombu's fanout prefix `/<db>.` and the `celery.pidbox` exchange (docs/protocol.md §1.7, §5).
    package var pidboxChannel: String { "/\(brokerClient.configuration.database).celery.pidbox" }

    /// Until shutdown: listens on the pidbox channel and answers `celery inspect` / `celery control`. Reconnects
    /// with backoff; on every (re)connect the shared revoked set is loaded again, so a revoke broadcast while this
    /// worker was disconnected is still honoured.
    package func controlLoop() async {
        defer { control.listening.signal() }
        guard configuration.remoteControl else { return }
        let dispatcher = ControlDispatcher(target: WorkerControlTarget(worker: self))
        var failures = 0
        while !isStopping {
            do {
                try await brokerClient.withSubscription(patterns: [pidboxChannel]) { subscription in
                    if failures > 0 { logger.info("remote control listening again") }
                    failures = 0
                    control.listening.signal()
                    let loaded = try await control.revoked.load()
                    logger.debug("remote control listening", metadata: ["celery.revoked": "\(loaded)"])
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            // Until shutdown (stop() signals) or cancellation (the wait returns at once).
                            while !self.isStopping { await self.controlStop.wait(for: nil) }
                        }
                        group.addTask {
                            for try await message in subscription.messages {
                                await self.handleControlMessage(message.payload, dispatcher: dispatcher)
                            }
                        }
                        _ = try await group.next()
                        group.cancelAll()
                    }
                }
            } catch {
                guard !isStopping else { break }
                failures += 1
                let delay = RedisBackoff(initial: .milliseconds(200), maximum: .seconds(5)).delay(
                    afterFailures: failures
                )
                logger.warning(
                    "remote control unavailable, retrying",
                    metadata: ["error": "\(error)", "retry.in": "\(delay)"]
                )
                try? await Task.sleep(for: delay)
            }
        }
    }

    package func handleControlMessage(_ payload: ByteBuffer, dispatcher: ControlDispatcher) async {
        let request: ControlRequest
        do {
            request = try ControlRequest(envelope: Array(payload.readableBytesView))
        } catch {
            logger.warning(
                "ignoring a control message that cannot be read: \(error)",
                metadata: [
                    "celery.message.head": "\(String(decoding: payload.readableBytesView.prefix(160), as: UTF8.self))"
                ]
            )
            return
        }
        if let clock = request.clock { control.adjustClock(clock) }
        guard request.isAddressed(to: configuration.hostname) else { return }
        logger.debug("control command", metadata: ["celery.control.method": "\(request.method)"])
        let outcome = await dispatcher.dispatch(request)
        guard case .reply(let body) = outcome, let address = request.replyTo else { return }
        do {
            try await sendControlReply(body, to: address, ticket: request.ticket)
        } catch {
            logger.warning(
                "cannot send a control reply",
                metadata: ["celery.control.method": "\(request.method)", "error": "\(error)"]
            )
        }
    }

    /// LPUSHes to every queue bound to the reply exchange with the routing key (kombu's direct-exchange lookup).
    /// A client that stopped waiting has removed its binding, so a late reply creates no stray list.
    /// KEYS[1]: `_kombu.binding.<exchange>`. ARGV: routing key, envelope, separator.
    package static let controlReplyScript = RedisScript(
        """
        local sep = ARGV[3]
        local pushed = 0
        for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
          local first = string.find(member, sep, 1, true)
          if first and string.sub(member, 1, first - 1) == ARGV[1] then
            local rest = string.sub(member, first + #sep)
            local second = string.find(rest, sep, 1, true)
            if second then
              redis.call('LPUSH', string.sub(rest, second + #sep), ARGV[2])
              pushed = pushed + 1
            end
          end
        end
        return pushed
        """
    )

    /// The reply envelope: `{hostname: body}` with the request's ticket and our clock (docs/protocol.md §5).
    package func controlReplyEnvelope(
        _ body: JSONValue,
        to address: ControlRequest.ReplyAddress,
        ticket: String?
    ) -> [UInt8] {
        let payload: JSONValue = .object([configuration.hostname: body])
        var headers: JSONObject = [:]
        if let ticket { headers["ticket"] = .string(ticket) }
        headers["clock"] = .int(control.forwardClock())
        let envelope: JSONValue = [
            "body": .string(Base64.encodeToString(bytes: payload.serialized())),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": .object(headers),
            "properties": [
                "delivery_mode": 1,
                "delivery_info": ["exchange": .string(address.exchange), "routing_key": .string(address.routingKey)],
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": .string(OutgoingTask.newID()),
            ],
        ]
        return envelope.serialized()
    }

    package func sendControlReply(
        _ body: JSONValue,
        to address: ControlRequest.ReplyAddress,
        ticket: String?
    ) async throws(RedisError) {
        let envelope = controlReplyEnvelope(body, to: address, ticket: ticket)
        try await brokerClient.evaluate(
            Self.controlReplyScript,
            keys: ["_kombu.binding.\(address.exchange)"],
            arguments: [address.routingKey, String(decoding: envelope, as: UTF8.self), KombuLayout.separator]
        )
    }

    // MARK: - Hooks for the executors

    /// Rate limits before a task runs: true to run it now; false when it now waits for its slot (it keeps its
    /// prefetch credit if it had one, and comes back as `.admitted`).
    package func admit(_ delivery: Delivery, _ message: TaskMessage, keepsCredit: Bool) async -> Bool {
        guard !control.isRevoked(message), registry[message.taskName] != nil else { return true }
        var wait = control.localRates.reserve(message.taskName)
        var admitted = true
        if let limit = control.globalRates[message.taskName] {
            do {
                if let global = try await control.globalLimiter.reserve(message.taskName, limit: limit) {
                    wait = max(wait ?? .zero, global)
                }
            } catch {
                logger.warning(
                    "cannot reserve a global rate-limit slot in Redis; asking again in 1 s",
                    metadata: ["celery.task.id": "\(message.id)", "error": "\(error)"]
                )
                wait = .seconds(1)
                admitted = false
            }
        }
        guard let wait else { return true }
        if !holdRateLimited(
            Machine.RateLimited(
                due: .now + wait,
                delivery: delivery,
                message: message,
                keepsCredit: keepsCredit,
                admitted: admitted
            )
        ) {
            await restore(delivery)  // shutting down: it goes back with the rest
        }
        return false
    }

    /// Celery's request info dict for `active`, `reserved`, `scheduled` and `query_task`.
    package func requestInfo(_ message: TaskMessage, timeStart: Double?, acknowledged: Bool) -> JSONValue {
        [
            "id": .string(message.id),
            "name": .string(message.taskName),
            "args": .array(message.args),
            "kwargs": .object(message.kwargs),
            "type": .string(message.taskName),
            "hostname": .string(configuration.hostname),
            "time_start": timeStart.map { .double($0) } ?? .null,
            "acknowledged": .bool(acknowledged),
            "delivery_info": [
                "exchange": .string(message.exchange),
                "routing_key": .string(message.routingKey),
                "priority": .int(message.priority),
                "redelivered": .bool(message.redelivered),
            ],
            "worker_pid": timeStart == nil ? .null : .int(processID),
        ]
    }

    /// Messages fetched and not started: the reserved queue and those waiting for a rate-limit slot.
    package var reservedMessages: [TaskMessage] {
        var messages: [TaskMessage] = []
        let (reserved, limited) = machine.withLock { ($0.reservedWork, $0.rateLimitedMessages) }
        for work in reserved {
            switch work {
            case .fetched(let delivery):
                if let message = try? TaskMessage(envelope: delivery.envelope, bodyLimit: bodyLimit) {
                    messages.append(message)
                }
            case .due(_, let message, _), .admitted(_, let message, _):
                messages.append(message)
            }
        }
        return messages + limited.map(\.message)
    }
}

/// The worker as the control commands see it.
package struct WorkerControlTarget: ControlTarget {
    package let worker: Worker

    package var hostname: String { worker.configuration.hostname }
    package var hooks: ControlHooks { worker.control.hooks }

    package func taskNames() -> [String] { worker.registry.names }

    package func taskAttribute(_ field: String, of taskName: String) -> String? {
        guard let task = worker.registry[taskName] else { return nil }
        return worker.taskAttribute(field, of: task)
    }

    package func report() -> String { worker.bugReport(settings: configuration()) }

    package func revokeStamps(_ headers: JSONObject, terminate: Bool) -> [(header: String, stamps: [JSONValue])] {
        worker.revokeStamps(headers, terminate: terminate)
    }

    package func activeRequests() -> [JSONValue] {
        worker.control.active.snapshot.map {
            worker.requestInfo($0.message, timeStart: $0.timeStart, acknowledged: $0.acknowledged)
        }
    }

    package func reservedRequests() -> [JSONValue] {
        worker.reservedMessages.map { worker.requestInfo($0, timeStart: nil, acknowledged: false) }
    }

    package func scheduledRequests() async -> [JSONValue] {
        var scheduled = worker.scheduledMessages
        if worker.configuration.parkETAAfter != nil,
            let parked = try? await worker.broker.parked(
                queues: worker.control.queues.current,
                limit: Worker.maximumParkedReported
            )
        {
            // Every worker consuming the queue reports its parked messages: they belong to no worker yet.
            for entry in parked {
                guard let message = try? TaskMessage(envelope: entry.envelope, bodyLimit: worker.bodyLimit) else {
                    continue
                }
                scheduled.append((CeleryTimestamp(secondsSince1970: entry.due), message))
            }
        }
        // A revoked task will not run: it is left out (its message is dropped when due).
        return scheduled.filter { !worker.control.isRevoked($0.message) }.map { entry in
            [
                "eta": .string(entry.due.iso8601),
                // The priority of Celery's timer entry, which is 6 for every ETA task (not the message's).
                "priority": 6,
                "request": worker.requestInfo(entry.message, timeStart: nil, acknowledged: false),
            ]
        }
    }

    package func queryTasks(_ ids: [String]) async -> JSONObject {
        let wanted = Set(ids)
        var found: JSONObject = [:]
        for entry in worker.control.active.snapshot where wanted.contains(entry.message.id) {
            found[entry.message.id] = [
                "active",
                worker.requestInfo(entry.message, timeStart: entry.timeStart, acknowledged: entry.acknowledged),
            ]
        }
        for message in worker.reservedMessages where wanted.contains(message.id) && found[message.id] == nil {
            found[message.id] = ["reserved", worker.requestInfo(message, timeStart: nil, acknowledged: false)]
        }
        for (_, message) in worker.scheduledMessages where wanted.contains(message.id) && found[message.id] == nil {
            found[message.id] = ["scheduled", worker.requestInfo(message, timeStart: nil, acknowledged: false)]
        }
        let missing = wanted.filter { found[$0] == nil }
        if worker.configuration.parkETAAfter != nil, !missing.isEmpty, missing.count <= Worker.maximumParkedLookups,
            let parked = try? await worker.broker.findParked(ids: Array(missing), queues: worker.control.queues.current)
        {
            for entry in parked {
                guard let message = try? TaskMessage(envelope: entry.envelope, bodyLimit: worker.bodyLimit),
                    wanted.contains(message.id), found[message.id] == nil
                else { continue }
                found[message.id] = ["scheduled", worker.requestInfo(message, timeStart: nil, acknowledged: false)]
            }
        }
        return found
    }

    package func stats() -> JSONValue {
        let configuration = worker.configuration
        var totals: JSONObject = [:]
        for (name, count) in worker.control.active.totals.sorted(by: { $0.key < $1.key }) {
            totals[name] = .int(count)
        }
        let broker = worker.brokerClient.configuration
        var host: JSONValue = .null
        var port: JSONValue = .null
        switch broker.endpoint {
        case .tcp(let name, let number):
            host = .string(name)
            port = .int(number)
        case .unix(let path):
            host = .string(path)
        case .sentinel(let sentinel):
            host = .string(sentinel.sentinels.first?.host ?? "")
            port = .int(sentinel.sentinels.first?.port ?? 0)
        }
        return [
            "total": .object(totals),
            "pid": .int(worker.processID),
            "clock": .string(String(worker.control.clockValue)),
            "uptime": .int(Int(CeleryTimestamp.now().secondsSince1970 - worker.control.startTime.secondsSince1970)),
            "pool": [
                "implementation": "swift-celery:async",
                "max-concurrency": .int(configuration.concurrency),
                "processes": [.int(worker.processID)],
                "max-tasks-per-child": "N/A",
                "put-guarded-by-semaphore": false,
                "timeouts": [0, 0],
            ],
            "broker": [
                "hostname": host,
                "userid": broker.username.map { .string($0) } ?? .null,
                "virtual_host": .string(String(broker.database)),
                "port": port,
                "insist": false,
                "ssl": .bool(broker.tls != nil),
                "transport": "redis",
                "connect_timeout": .double(Self.seconds(broker.connectTimeout)),
                "transport_options": [
                    "visibility_timeout": .double(Self.seconds(configuration.visibilityTimeout))
                ],
                "login_method": .null,
                "uri_prefix": .null,
                "heartbeat": .null,
                "failover_strategy": "round-robin",
                "alternates": [],
            ],
            "prefetch_count": .int(configuration.prefetchCount),
            "rusage": Self.resourceUsage(),
        ]
    }

    package func configuration() -> JSONValue {
        let configuration = worker.configuration
        return [
            "broker_url": .string(worker.brokerClient.configuration.redactedURL),
            "result_backend": .string(worker.backendClient.configuration.redactedURL),
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "result_accept_content": ["json"],
            "worker_concurrency": .int(configuration.concurrency),
            "worker_prefetch_multiplier": .int(configuration.prefetchMultiplier),
            "task_acks_late": .bool(configuration.acksLate),
            "result_expires": configuration.resultExpires.map { .int(Int($0.components.seconds)) } ?? .null,
            "result_extended": .bool(configuration.resultExtended),
            "task_track_started": .bool(configuration.trackStarted),
            "task_queues": .array(worker.control.queues.current.map { .string($0) }),
            // Keys Celery's own integration suite reads (`test_inspect.py::test_conf`), with this worker's values.
            "deprecated_settings": .null,
            "include": ["celery.app.builtins"],
            "enable_utc": true,
            "timezone": "UTC",
            "broker_heartbeat": 0,
            "worker_hijack_root_logger": false,
            "worker_log_color": false,
            "broker_transport_options": [
                "visibility_timeout": .double(Self.seconds(configuration.visibilityTimeout)),
                "unacked_key": .string(configuration.unackedKey),
                "unacked_index_key": .string(configuration.unackedIndexKey),
                "unacked_mutex_key": .string(configuration.unackedMutexKey),
            ],
        ]
    }

    package func activeQueues() -> [JSONValue] {
        worker.control.queues.current.map { queue in
            [
                "name": .string(queue),
                "exchange": [
                    "name": .string(queue), "type": "direct", "arguments": .null, "durable": true, "passive": false,
                    "auto_delete": false, "delivery_mode": .null, "no_declare": false,
                ],
                "routing_key": .string(queue),
                "queue_arguments": .null,
                "binding_arguments": .null,
                "consumer_arguments": .null,
                "durable": true,
                "exclusive": false,
                "auto_delete": false,
                "no_ack": false,
                "alias": .null,
                "bindings": [],
                "no_declare": .null,
                "expires": .null,
                "message_ttl": .null,
                "max_length": .null,
                "max_length_bytes": .null,
                "max_priority": .null,
            ]
        }
    }

    package func revokedIDs() -> [String] { worker.control.revoked.list }

    package func revoke(_ ids: [String]) async {
        guard !ids.isEmpty else { return }
        do {
            try await worker.control.revoked.add(ids)
        } catch {
            worker.logger.warning(
                "cannot share a revoke through Redis; it holds on this worker only",
                metadata: ["error": "\(error)"]
            )
        }
        worker.logger.info("tasks flagged as revoked: \(ids.joined(separator: ", "))")
        // Celery 5.7: REVOKED is stored at once unless the task runs here, or has a result or a started state.
        let ttl = worker.configuration.resultExpires.map { Int($0.components.seconds) } ?? 0
        for id in ids where worker.control.active.entry(id) == nil {
            let meta = worker.backend.meta(
                state: .revoked,
                result: StoredException(type: "TaskRevokedError", module: "celery.exceptions", arguments: ["revoked"])
                    .resultJSON,
                message: nil,
                taskID: id,
                children: .null
            )
            do {
                try await worker.backendClient.evaluate(
                    RevokedTasks.markRevokedScript,
                    keys: [ResultBackend.keyPrefix + id],
                    arguments: [String(ttl), meta.serializedString()]
                )
            } catch {
                worker.logger.warning(
                    "cannot store REVOKED",
                    metadata: ["celery.task.id": "\(id)", "error": "\(error)"]
                )
            }
        }
    }

    package func terminate(_ ids: [String]) -> [String] {
        let terminated = worker.control.active.terminate(ids)
        for id in terminated { worker.logger.info("terminating \(id)") }
        return terminated
    }

    package func setRateLimit(_ limit: TaskRateLimit, for taskName: String) -> Bool {
        guard worker.registry[taskName] != nil else {
            worker.logger.error("rate limit attempt for unknown task \(taskName)")
            return false
        }
        worker.control.localRates.set(limit, for: taskName)
        worker.logger.info("new rate limit for tasks of type \(taskName): \(limit.isLimited ? limit.text : "none")")
        return true
    }

    package func setTimeLimits(soft: Double?, hard: Double?, for taskName: String) -> Bool {
        guard worker.registry[taskName] != nil else {
            worker.logger.error("time limit attempt for unknown task \(taskName)")
            return false
        }
        worker.control.setTimeLimits(.init(soft: soft, hard: hard), for: taskName)
        worker.logger.info(
            "new time limits for tasks of type \(taskName): soft=\(soft.map { "\($0)" } ?? "None") hard=\(hard.map { "\($0)" } ?? "None")"
        )
        return true
    }

    package func addConsumer(_ queue: String) async {
        guard worker.control.queues.add(queue) else {
            worker.logger.info("already consuming from \(queue)")
            return
        }
        do {
            try await worker.broker.declare(queues: [queue])
        } catch {
            worker.logger.warning("cannot declare queue \(queue)", metadata: ["error": "\(error)"])
        }
        worker.logger.info("started consuming from \(queue)")
    }

    package func cancelConsumer(_ queue: String) async {
        worker.control.queues.remove(queue)
        worker.logger.info("no longer consuming from \(queue)")
    }

    package func mergeRevoked(_ ids: [String]) { worker.control.revoked.addLocally(ids) }

    package func forwardClock() -> Int { worker.control.forwardClock() }

    package func currentClock() -> Int { worker.control.clockValue }

    package func shutdown() {
        worker.logger.warning("Got shutdown from remote")
        worker.stop()
    }

    package static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// `getrusage(RUSAGE_SELF)` in the shape Celery's `stats` reports it.
    package static func resourceUsage() -> JSONValue {
        var usage = rusage()
        #if canImport(Glibc)
        let who = __rusage_who_t(RUSAGE_SELF.rawValue)
        #else
        let who = RUSAGE_SELF
        #endif
        guard getrusage(who, &usage) == 0 else { return "N/A" }
        func seconds(_ value: timeval) -> JSONValue { .double(Double(value.tv_sec) + Double(value.tv_usec) / 1e6) }
        return [
            "utime": seconds(usage.ru_utime),
            "stime": seconds(usage.ru_stime),
            "maxrss": .int(Int(usage.ru_maxrss)),
            "ixrss": .int(Int(usage.ru_ixrss)),
            "idrss": .int(Int(usage.ru_idrss)),
            "isrss": .int(Int(usage.ru_isrss)),
            "minflt": .int(Int(usage.ru_minflt)),
            "majflt": .int(Int(usage.ru_majflt)),
            "nswap": .int(Int(usage.ru_nswap)),
            "inblock": .int(Int(usage.ru_inblock)),
            "oublock": .int(Int(usage.ru_oublock)),
            "msgsnd": .int(Int(usage.ru_msgsnd)),
            "msgrcv": .int(Int(usage.ru_msgrcv)),
            "nsignals": .int(Int(usage.ru_nsignals)),
            "nvcsw": .int(Int(usage.ru_nvcsw)),
            "nivcsw": .int(Int(usage.ru_nivcsw)),
        ]
    }
}
