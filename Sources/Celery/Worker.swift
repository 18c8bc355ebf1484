import CeleryProtocol
import CeleryRedis
import JSON
import Logging
import Redis
import ServiceLifecycle
import Synchronization

/// A Celery worker: consumes protocol v2 messages from Redis in kombu's layout, runs the registered Swift
/// handlers, and stores results where Python's `AsyncResult` reads them.
///
/// One fetch loop pops messages (many per round trip when they are waiting, a blocking pop when idle) while
/// prefetch credit lasts; `concurrency` executor tasks run them; one batcher writes results and acks.
/// Graceful shutdown (SIGTERM/SIGINT through ServiceLifecycle) stops fetching, lets running tasks finish, gives
/// back every message that did not start, and flushes the last results and acks.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    package let registry: TaskRegistry
    package let brokerClient: RedisClient
    package let backendClient: RedisClient
    package let redisForTasks: RedisClient
    package let logger: Logger
    /// The queues: kombu's Redis lists, or an in-memory broker in unit tests.
    package let broker: any Broker
    package let backend: ResultBackend
    package let batcher: WriteBatcher
    /// The crash guard's running marks (Worker+CrashGuard.swift).
    package let runningMarks: RunningMarks
    /// Runs the crash guard's suspects alone (Worker+CrashGuard.swift).
    package let suspects = SuspectGate()
    /// Where results and acks go: the batcher, or an in-memory store in unit tests.
    package let results: any ResultStore
    /// Where follow-up tasks go: the broker, or an in-memory list in unit tests.
    package let publisher: any TaskPublisher
    /// Monitoring events (`-E`, heartbeats); the control commands reach it here.
    public let events: EventDispatcher
    package let metrics: WorkerMetrics
    /// False while fetching from Redis fails.
    package let fetchHealthy = Atomic<Bool>(true)
    /// The life of every fetched message: credit, reserved, held and rate-limited messages, the tags in
    /// `unacked`, the shutdown phase (Worker+StateMachine.swift drives it).
    package let machine: Mutex<Machine>
    /// The results each running task sent with `TaskContext.send`, by task id, for its `children`.
    package let trails = Mutex<[String: [JSONValue]]>([:])
    /// Wakes the loop that moves held and rate-limited messages to the executors when they are due.
    package let dueTimer = TimerSignal()
    /// Wakes the idle fetch loop when a message arrives (`IdleFetch.blmove`).
    package let idleWake: IdleWake
    /// Signalled by `stop()`: the visibility loop and the remote-control listener sleep on these instead of
    /// waking every 100 ms to look.
    package let visibilityStop = TimerSignal()
    package let controlStop = TimerSignal()
    package let pagesStop = TimerSignal()
    package let unparkStop = TimerSignal()
    /// ETA messages on their way to Redis's parked sets (Worker+Parking.swift).
    package let parking = ParkingQueue()
    /// Messages executors have taken from the reserved queue: the pages loop tells an idle spell by it.
    package let worked = Atomic<Int>(0)
    /// Remote control, revocation and rate limits (Worker+Control.swift).
    package let control: WorkerControlState
    private let stopping = Atomic<Bool>(false)
    private let readyState = Atomic<Bool>(false)
    package let processID = Int(getpid())
    /// Where the fetch loop, the idle watchers and the result batcher run: the event loop of the broker's
    /// connections, or nil for Swift's global executor.
    package let ioExecutor: EventLoopTaskExecutor?

    /// - Parameters:
    ///   - broker: where messages are consumed and acked. A client made on one event loop
    ///     (`RedisClient(..., eventLoopGroup: loop)`) runs the fetch loop, the idle watchers and the result batcher
    ///     on that loop: a reply resumes them on the thread that read it, and what they send is written without a
    ///     hand-over to another thread (make the backend's client on the same loop). Handlers run on Swift's
    ///     global executor, except a quick one whose message came alone to an idle worker
    ///     (``WorkerConfiguration/inlineHandlerLimit``): that runs on the loop too. Otherwise everything runs on
    ///     the global executor.
    ///   - backend: where results are stored (often the same Redis).
    ///   - redis: what handlers get as `context.redis` (REDIS_URL, else the broker).
    public convenience init(
        configuration: WorkerConfiguration,
        registry: TaskRegistry,
        broker: RedisClient,
        backend: RedisClient,
        redis: RedisClient? = nil,
        metrics: WorkerMetrics = WorkerMetrics(),
        logger: Logger
    ) {
        self.init(
            configuration: configuration,
            registry: registry,
            broker: broker,
            backend: backend,
            redis: redis,
            metrics: metrics,
            results: nil,
            publisher: nil,
            logger: logger
        )
    }

    /// As the public initializer; `results` and `publisher` replace the Redis result writer and the broker's
    /// publishing (unit tests of the executor and the recorder run on in-memory ones).
    package init(
        configuration: WorkerConfiguration,
        registry: TaskRegistry,
        broker: RedisClient,
        backend: RedisClient,
        redis: RedisClient? = nil,
        metrics: WorkerMetrics = WorkerMetrics(),
        results: (any ResultStore)?,
        publisher: (any TaskPublisher)?,
        queues: (any Broker)? = nil,
        logger: Logger
    ) {
        self.ioExecutor = broker.eventLoop.map { EventLoopTaskExecutor(eventLoop: $0) }
        precondition(configuration.concurrency > 0, "concurrency must be at least 1")
        // With an event loop, one of the executors waits on it (`inlineExecutorLoop`).
        self.machine = Mutex(
            Machine(
                credit: configuration.prefetchCount,
                otherExecutors: ioExecutor == nil ? 0 : configuration.concurrency - 1,
                maximumCreditFreeHeld: max(0, configuration.maximumHeld)
            )
        )
        self.configuration = configuration
        // Celery's built-in tasks (`celery.map`, `celery.starmap`, `celery.chunks`, ...), as every Python worker has.
        self.registry = registry.withBuiltins()
        self.brokerClient = broker
        self.backendClient = backend
        self.redisForTasks = redis ?? broker
        var logger = logger
        logger[metadataKey: "celery.hostname"] = "\(configuration.hostname)"
        self.logger = logger
        var layout = KombuLayout()
        layout.unackedKey = configuration.unackedKey
        layout.unackedIndexKey = configuration.unackedIndexKey
        layout.unackedMutexKey = configuration.unackedMutexKey
        // A worker that dies while it restores (a crash loop's worker runs what it has just restored) leaves the
        // mutex behind: no restore runs until it expires, so it lives no longer than the visibility timeout. Each
        // message's restore is atomic on its own; the mutex only keeps restorers from doing the same work twice.
        let timeout = configuration.visibilityTimeout.components
        let timeoutMilliseconds = timeout.seconds * 1000 + timeout.attoseconds / 1_000_000_000_000_000
        layout.unackedMutexExpiry = Int(min(300_000, max(1000, timeoutMilliseconds)))
        layout.maximumMessageSize = max(0, configuration.maximumMessageSize)
        layout.runningKey = configuration.runningKey
        layout.crashCountKey = configuration.crashCountKey
        layout.maximumCrashes = max(0, configuration.maximumCrashes)
        self.broker = queues ?? KombuBroker(client: broker, layout: layout, logger: logger)
        self.backend = ResultBackend(
            expires: configuration.resultExpires,
            extended: configuration.resultExtended,
            hostname: configuration.hostname
        )
        let ttl = configuration.resultExpires.map { Int($0.components.seconds) } ?? 0
        self.batcher = WriteBatcher(
            backend: backend,
            broker: broker,
            layout: layout,
            resultTTL: ttl,
            clearsRunningMarks: configuration.marksRunning,
            logger: logger
        )
        self.results = results ?? batcher
        self.runningMarks = RunningMarks(broker: self.broker, worker: configuration.hostname, logger: logger)
        self.publisher = publisher ?? KombuPublisher(client: broker)
        self.idleWake = IdleWake(client: broker, blockTimeout: configuration.idlePollTimeout, logger: logger)
        self.control = WorkerControlState(
            configuration: configuration,
            registry: registry,
            broker: broker,
            logger: logger
        )
        self.metrics = metrics
        self.events = EventDispatcher(
            client: broker,
            hostname: configuration.hostname,
            taskEvents: configuration.taskEvents,
            heartbeatInterval: configuration.heartbeatInterval,
            logger: logger
        )
        // `celery control enable_events` / `disable_events` / `heartbeat` act on this worker's dispatcher.
        let events = self.events
        control.hooks = ControlHooks(
            enableEvents: {
                let wasEnabled = events.taskEventsEnabled
                events.setEnabled(true)
                return !wasEnabled
            },
            disableEvents: {
                let wasEnabled = events.taskEventsEnabled
                events.setEnabled(false)
                return wasEnabled
            },
            heartbeat: { events.sendHeartbeat() }
        )
    }

    /// True from the moment the worker consumes until it starts shutting down.
    public var isReady: Bool { readyState.load(ordering: .relaxed) }

    /// Runs until graceful shutdown (or cancellation).
    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await runUntilStopped()
        } onGracefulShutdown: {
            self.stop()
        }
    }

    /// Starts a warm shutdown: fetch no more, finish what runs, restore what was fetched but did not start.
    public func stop() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        readyState.store(false, ordering: .relaxed)
        logger.info("warm shutdown: finishing running tasks")
        if let waiter = machine.withLock({ $0.stop() }) { waiter.resume(returning: 0) }
        dueTimer.signal()
        idleWake.close()
        visibilityStop.signal()
        controlStop.signal()
        pagesStop.signal()
        unparkStop.signal()
    }

    /// The most bytes a compressed message body may decompress to: `--max-message-size` (no limit: 0).
    package var bodyLimit: Int {
        configuration.maximumMessageSize > 0 ? configuration.maximumMessageSize : Int.max
    }

    package var isStopping: Bool { stopping.load(ordering: .relaxed) || Task.isCancelled }

    private func runUntilStopped() async throws {
        guard try await declareQueues() else { return }
        await control.loadRevoked(logger: logger)
        await withDiscardingTaskGroup { outer in
            outer.addTask { await withTaskExecutorPreference(self.ioExecutor) { await self.batcher.run() } }
            // Remote control listens before the worker says it is ready, so a command sent right after is not lost.
            outer.addTask { await self.controlLoop() }
            outer.addTask { await self.events.run() }
            await control.listening.wait(upTo: .seconds(5))
            readyState.store(true, ordering: .relaxed)
            logger.info(
                "worker ready",
                metadata: [
                    "celery.queues": "\(configuration.queues.joined(separator: ","))",
                    "celery.concurrency": "\(configuration.concurrency)",
                    "celery.tasks": "\(registry.names.count)",
                    "redis.url": "\(brokerClient.configuration.redactedURL)",
                ]
            )
            let leftovers = await withDiscardingTaskGroup(returning: [Delivery].self) { inner in
                for index in 0..<configuration.concurrency {
                    if index == 0, let ioExecutor {
                        inner.addTask {
                            await withTaskExecutorPreference(ioExecutor) { await self.inlineExecutorLoop() }
                        }
                    } else {
                        inner.addTask { await self.executorLoop() }
                    }
                }
                inner.addTask { await self.dueLoop() }
                inner.addTask { await self.visibilityLoop() }
                if configuration.parkETAAfter != nil { inner.addTask { await self.unparkLoop() } }
                if configuration.releasePages { inner.addTask { await self.pagesLoop() } }
                if configuration.idleFetch == .blmove {
                    inner.addTask { await withTaskExecutorPreference(self.ioExecutor) { await self.idleWake.run() } }
                }
                await withTaskExecutorPreference(ioExecutor) { await fetchLoop() }
                idleWake.close()
                return closeQueues()
            }
            // Every executor has returned: nothing else can take or add a message now.
            await giveBack(machine.withLock { $0.takeUnstarted() } + leftovers)
            batcher.close()
            events.close()
        }
        logger.info("worker stopped")
    }

    /// Declares the queues, retrying while Redis is unreachable; false if shutdown came first.
    private func declareQueues() async throws -> Bool {
        do {
            let backoff = RedisBackoff(initial: .milliseconds(200), maximum: .seconds(5))
            try await backoff.retry(
                shouldStop: { _ in isStopping },
                onFailure: { error, _, delay in
                    logger.error(
                        "Redis unavailable, retrying",
                        metadata: ["error": "\(error)", "retry.in": "\(delay)"]
                    )
                },
                operation: { () throws(RedisError) in try await broker.declare(queues: configuration.queues) }
            )
            return true
        } catch {
            return false
        }
    }

    // MARK: - Fetching

    private func fetchLoop() async {
        var failures = 0
        var idleDelay = Duration.milliseconds(1)
        var lostPops: [String] = []
        while !isStopping {
            let credit = await acquireCredit()
            guard credit > 0, !isStopping else {
                releaseCredit(credit)
                break
            }
            // kombu's round_robin cycle: the next fetch starts with the next queue (add_consumer/cancel_consumer
            // change the set).
            let lists = control.queues.nextLists()
            guard !lists.isEmpty else {
                releaseCredit(credit)
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            let stamp = KombuBroker.now()
            // (Not one the pop will dead-letter for its size: that one is never decoded.)
            let limit = configuration.maximumMessageSize
            let seen = idleWake.takeSeen().flatMap { limit > 0 && $0.count > limit ? nil : $0 }
            var popInFlight = true
            do {
                let pending = try await broker.startPop(lists: lists, limit: credit, stamp: stamp)
                // While the pop travels, decode the message a watcher saw: most often the one the pop brings.
                let ahead = seen.flatMap { bytes in
                    (try? TaskMessage(envelope: bytes, bodyLimit: bodyLimit)).map { (bytes, $0) }
                }
                var deliveries = try await pending.deliveries()
                popInFlight = false
                if let ahead { Self.attach(ahead, to: &deliveries) }
                fetchHealthy.store(true, ordering: .relaxed)
                if failures > 0 {
                    logger.info("consuming again", metadata: ["redis.url": "\(brokerClient.configuration.redactedURL)"])
                    failures = 0
                }
                if !lostPops.isEmpty { lostPops = await recoverLostPops(lostPops) }
                if deliveries.isEmpty, configuration.idleFetch == .blmove, !idleWake.isUnavailable {
                    // Every pop is the atomic script: nothing is ever popped without being recorded. Idle, wait
                    // for a BLMOVE watcher to see a message (it leaves the message in place), then pop again.
                    releaseCredit(credit)
                    await idleWake.wait(lists: lists, timeout: configuration.idlePollTimeout)
                    continue
                }
                if deliveries.isEmpty, configuration.idleFetch != .brpop {
                    // Polling (or BLMOVE refused): pop again after 1 ms, 2 ms, ... up to `idlePolling`.
                    releaseCredit(credit)
                    try? await Task.sleep(for: idleDelay)
                    idleDelay = min(idleDelay * 2, configuration.idlePolling)
                    continue
                }
                idleDelay = .milliseconds(1)
                if deliveries.isEmpty,
                    let delivery = try await broker.blockingPop(lists: lists, timeout: configuration.idlePollTimeout)
                {
                    deliveries = [delivery]
                }
                let popped = deliveries.count
                // The oversized ones are answered; the rest are reserved, and the credit they do not hold comes back.
                deliveries = await rejectOversized(deliveries)
                await reserveFetched(deliveries, taken: credit)
                if popped < credit, configuration.idleFetch == .blmove, !idleWake.isUnavailable, !isStopping {
                    // The pop takes from every list until it has `credit` messages: fewer means it emptied them.
                    // Wait for the next message now instead of popping nothing first (a watcher's BLMOVE answers
                    // at once if one came meanwhile).
                    await idleWake.wait(lists: lists, timeout: configuration.idlePollTimeout)
                }
            } catch {
                // Redis may have run the pop script and lost only its reply: look for those messages once it is back.
                if popInFlight { lostPops.append(stamp) }
                releaseCredit(credit)
                fetchHealthy.store(false, ordering: .relaxed)
                failures += 1
                await broker.closeBlockingPop()
                let delay = RedisBackoff(initial: .milliseconds(100), maximum: .seconds(5)).delay(
                    afterFailures: failures
                )
                logger.error(
                    "cannot fetch from Redis, retrying",
                    metadata: ["error": "\(error)", "retry.in": "\(delay)"]
                )
                try? await Task.sleep(for: delay)
            }
        }
        await broker.closeBlockingPop()
    }

    /// Gives the message decoded ahead to the first delivery with the same bytes (none if the pop brought another).
    package static func attach(_ ahead: ([UInt8], TaskMessage), to deliveries: inout [Delivery]) {
        if let index = deliveries.firstIndex(where: { $0.oversized == nil && sameBytes($0.envelope, ahead.0) }) {
            deliveries[index].decoded = ahead.1
        }
    }

    /// Whether two envelopes hold the same bytes, compared with `memcmp`: `Array`'s `==` compares them one
    /// element at a time, about 5,700 instructions for an envelope of `tasks.add` (1% of a single task's).
    package static func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { a in
            b.withUnsafeBytes { b in
                guard let left = a.baseAddress, let right = b.baseAddress else { return true }
                return memcmp(left, right, a.count) == 0
            }
        }
    }

    /// Closes the state machine: waiting executors end; returns the messages that did not start, in fetch order.
    private func closeQueues() -> [Delivery] {
        let closed = machine.withLock { $0.close() }
        for waiter in closed.executors { waiter.resume(returning: nil) }
        closed.inline?.resume(returning: nil)
        closed.credit?.resume(returning: 0)
        return closed.giveBack
    }

    /// Restores messages that were fetched but did not start.
    private func giveBack(_ messages: [Delivery]) async {
        // RPUSH puts each at the consuming end: restore the last first so they come back in their original order.
        for delivery in messages.reversed() {
            guard await restore(delivery) else {
                logger.error(
                    "Redis unreachable: the remaining messages stay in unacked for the visibility-timeout restore"
                )
                break
            }
        }
        if !messages.isEmpty {
            logger.info("restored \(messages.count) unacknowledged message(s)")
        }
    }

    /// Puts a fetched message back on its list (kombu's restore), retrying while Redis is unreachable.
    @discardableResult
    package func restore(_ delivery: Delivery, atBack: Bool = false) async -> Bool {
        guard let tag = delivery.tag ?? (try? TaskMessage.deliveryTag(in: delivery.envelope)) else { return true }
        do {
            let backoff = RedisBackoff(initial: .milliseconds(100), maximum: .seconds(1))
            try await backoff.retry(
                maximumAttempts: 20,
                onFailure: { error, attempt, _ in
                    logger.warning(
                        "cannot restore a message yet",
                        metadata: ["error": "\(error)", "attempt": "\(attempt)"]
                    )
                },
                operation: { () throws(RedisError) in
                    try await broker.restore(delivery, deliveryTag: tag, atBack: atBack)
                }
            )
            return true
        } catch {
            logger.error(
                "message left in unacked for the visibility-timeout restore",
                metadata: ["celery.delivery_tag": "\(tag)"]
            )
            return false
        }
    }

    // MARK: - Executing

    private func executorLoop() async {
        while let work = await takeWork() {
            await run(work, inline: false)
            // A handler that does not suspend runs on this thread from start to end (TimeLimits.run), and taking
            // the next reserved message does not suspend either: without this, busy executors would keep both
            // threads of the pool, and the visibility refresh, remote control and events (and the fetch loop and
            // the result batcher when they have no event loop of their own) would wait until the reserved queue
            // ran dry.
            await Task.yield()
        }
    }

    /// The executor that waits on the broker connections' event loop. A message that came alone to an otherwise
    /// idle worker runs here from pop to result, on the thread that read it: no other thread is woken to run the
    /// handler, nor to write its result (the batcher is on this loop too). Only the handler is sent to the global
    /// pool unless it is known to be quick (`execute(_:inline:)`). A message that comes while the others are busy
    /// is run on the global pool, with whatever else is reserved, as the other executors do.
    private func inlineExecutorLoop() async {
        while let (work, alone) = await takeInlineWork() {
            if alone {
                // Let what the fetch loop just queued on the loop go first: re-arming the idle watchers sends their
                // BLMOVEs, so a message that comes while this one runs is seen at once.
                await Task.yield()
                await run(work, inline: true)
                continue
            }
            await withTaskExecutorPreference(globalConcurrentExecutor) {
                var next: ReservedWork? = work
                while let work = next {
                    await run(work, inline: false)
                    await Task.yield()
                    next = tryTakeWork()
                }
            }
        }
    }

    /// Runs one message an executor took; `inline` when on the event loop (`inlineExecutorLoop`).
    private func run(_ work: ReservedWork, inline: Bool) async {
        worked.add(1, ordering: .relaxed)
        if isStopping {
            // Shutdown began: nothing new starts; the message goes back with the rest.
            machine.withLock { $0.notStarted(work) }
            return
        }
        switch work {
        case .fetched(let delivery):
            let keepsCredit = await process(delivery, inline: inline)
            finished(keepsCredit: keepsCredit)
        case .due(let delivery, let message, let keepsCredit):
            guard await admit(delivery, message, keepsCredit: keepsCredit) else { return }
            await execute(message, inline: inline)
            finished(keepsCredit: keepsCredit)
        case .admitted(_, let message, let keepsCredit):
            await execute(message, inline: inline)
            finished(keepsCredit: keepsCredit)
        }
    }

    /// Decodes and runs one fetched message; false when it went on hold (its credit is then already free).
    private func process(_ delivery: Delivery, inline: Bool) async -> Bool {
        var message: TaskMessage
        if let decoded = delivery.decoded {
            message = decoded
        } else {
            do {
                message = try TaskMessage(envelope: delivery.envelope, bodyLimit: bodyLimit)
            } catch {
                await reject(delivery, error)
                return true
            }
        }
        // The pop recorded the message in `unacked` under the tag its text search found; ack that one, even if a
        // hostile envelope names another tag elsewhere.
        if let recorded = delivery.tag, recorded != message.deliveryTag { message.deliveryTag = recorded }
        noteReceived(message)
        if let eta = message.eta, eta > CeleryTimestamp.now(), !isStopping, !control.isRevoked(message) {
            // Due later than the in-memory window: parked in Redis, and this worker is done with it.
            if shouldPark(eta), await park(delivery, message, eta: eta) { return true }
            // Held: its credit stays with it until it has run, or was given back by the machine.
            guard holdUntilDue(delivery, eta: eta) else {
                await restore(delivery)
                return true
            }
            return false
        }
        guard await admit(delivery, message, keepsCredit: true) else { return false }
        await execute(message, inline: inline)
        return true
    }
}

extension TaskMessage {
    /// The delivery tag of an envelope that may not decode as a task.
    package static func deliveryTag(in envelope: [UInt8]) throws -> String? {
        try JSONValue(parsing: envelope)["properties"]?["delivery_tag"]?.stringValue
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
