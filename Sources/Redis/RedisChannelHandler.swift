import DequeModule
import Logging
import NIOCore
import NIOTLS
import RESP
import Synchronization

/// What the connection writes into the pipeline: one or more encoded commands flushed together, and where their
/// replies go, one per command (nil for commands sent in subscriber mode, whose answers are pushes).
struct RedisRequest {
    var commands: [RESPCommand]
    var replies: RedisReplies?
    /// When the last reply must have arrived; the connection is closed if it has not.
    var deadline: NIODeadline
}

/// A message delivered on a subscription connection: RESP3 push frames, or RESP2 arrays in subscriber mode.
public struct RedisPush: Sendable {
    /// The frame as received.
    public var token: RESPToken
}

/// The one channel handler of a Redis connection: it writes commands, decodes replies of any fragmentation and
/// hands them, in order, to the requests that asked (FIFO, as Redis answers).
///
/// A parsing error or a command timeout closes the connection: with replies matched by position, nothing after
/// an unparseable or missing reply can be trusted.
final class RedisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    /// One per command waiting for its reply.
    private struct Pending {
        var replies: RedisReplies
        var deadline: NIODeadline
    }

    /// Batches up to this many bytes are copied into one buffer before writing; larger ones are written as they are.
    static let coalescingLimit = 1 << 20

    private let eventLoop: EventLoop
    private let logger: Logger
    private var pending = Deque<Pending>()
    private var receiveBuffer: ByteBuffer?
    /// The command-timeout timer and when it fires. It is left armed when the last reply comes (arming and
    /// cancelling one for each command on an otherwise idle connection cost about 20,000 instructions per task
    /// one task at a time): when it fires it looks at the oldest command waiting, if any, and arms again for it.
    private var timeoutTask: Scheduled<Void>?
    private var timeoutAt = NIODeadline.distantFuture
    /// Why the connection ended, once it has; later writes fail with it.
    private(set) var closedError: RedisError?
    private var context: ChannelHandlerContext?
    /// In subscriber mode every frame is a push; set once SUBSCRIBE/PSUBSCRIBE has been sent.
    var subscriberMode = false
    /// Receives push frames (and all frames in subscriber mode); nil drops them.
    var pushHandler: (@Sendable (Result<RedisPush, RedisError>) -> Void)?

    /// True on a TLS connection until the handshake completes: a failure before then is a TLS failure, whatever
    /// order the TLS handler reports the error and the close in.
    private var tlsHandshakePending: Bool

    /// Set, from the event loop, once the handler has given up on the connection; readable from any thread, so
    /// that a caller does not pick a connection that is still closing (a TLS close waits for the peer).
    let closing: RedisClosingFlag

    init(eventLoop: EventLoop, logger: Logger, tls: Bool = false, closing: RedisClosingFlag = RedisClosingFlag()) {
        self.eventLoop = eventLoop
        self.logger = logger
        self.tlsHandshakePending = tls
        self.closing = closing
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent {
            tlsHandshakePending = false
        }
        context.fireUserInboundEventTriggered(event)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        failAll(RedisError(.connectionClosed, "the connection handler was removed"))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let closedError {
            request.replies?.fail(closedError)
            promise?.fail(closedError)
            return
        }
        let wasIdle = pending.isEmpty
        if let replies = request.replies {
            assert(replies.count == request.commands.count, "one reply per command")
            for _ in 0..<replies.count { pending.append(Pending(replies: replies, deadline: request.deadline)) }
        }
        // The timer must fire by the oldest waiting command's deadline. Behind others, this one is looked at when
        // it becomes the oldest (as Redis answers in order, nothing can be learnt about it before).
        if wasIdle, request.replies != nil, timeoutTask == nil || timeoutAt > request.deadline {
            timeoutTask?.cancel()
            scheduleTimeout(at: request.deadline, context: context)
        }
        var size = 0
        for command in request.commands { size += command.buffer.readableBytes }
        if request.commands.count > 1, size <= RedisChannelHandler.coalescingLimit {
            // One buffer for a batch of small commands: a pipeline write per command costs more than copying
            // its bytes (and writev takes at most IOV_MAX buffers at a time).
            var batch = context.channel.allocator.buffer(capacity: size)
            for command in request.commands { batch.writeImmutableBuffer(command.buffer) }
            context.write(wrapOutboundOut(batch), promise: promise)
        } else {
            let last = request.commands.count - 1
            for (index, command) in request.commands.enumerated() {
                context.write(wrapOutboundOut(command.buffer), promise: index == last ? promise : nil)
            }
            if request.commands.isEmpty { promise?.succeed() }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if receiveBuffer == nil || receiveBuffer!.readableBytes == 0 {
            receiveBuffer = incoming
        } else {
            receiveBuffer!.writeBuffer(&incoming)
        }
        do {
            while true {
                guard let token = try RESPToken(consuming: &receiveBuffer!) else { break }
                if Self.isReadOnlyError(token) {
                    // Before the reply reaches its caller, whose next command must not pick this connection.
                    closing.set()
                }
                if !deliver(token) {
                    // A demoted master (Sentinel failover, a managed Redis's DNS flip): the reply goes to its
                    // command, then the connection closes so that the next one finds the master again. A
                    // connection kept open here would answer READONLY forever (celery#7946).
                    logger.info("Redis answered READONLY: closing the connection to find the master again")
                    failAll(RedisError(.connectionClosed, "Redis answered READONLY: it is a replica now"))
                    context.close(promise: nil)
                    return
                }
            }
        } catch {
            let redisError = RedisError(.protocolError, "\(error)", underlyingError: error)
            logger.debug("closing connection: invalid RESP", metadata: ["error": "\(error)"])
            failAll(redisError)
            context.close(promise: nil)
            return
        }
        if receiveBuffer!.readableBytes == 0 {
            receiveBuffer!.clear()
        } else if receiveBuffer!.readerIndex > 65536 {
            receiveBuffer!.discardReadBytes()
        }
    }

    /// Hands a frame to whoever waits for it; false when it was a `READONLY` error and the connection must go.
    private func deliver(_ token: RESPToken) -> Bool {
        switch token.kind {
        case .push:
            pushHandler?(.success(RedisPush(token: token)))
            return true
        case .attribute:
            return true
        default:
            break
        }
        if subscriberMode, token.kind == .array, pending.isEmpty {
            pushHandler?(.success(RedisPush(token: token)))
            return true
        }
        guard let next = pending.popFirst() else {
            logger.debug("reply with no command waiting for it", metadata: ["reply": "\(token)"])
            return true
        }
        next.replies.receive(token)
        return !Self.isReadOnlyError(token)
    }

    /// `-READONLY You can't write against a read only replica.`, also as a script's error
    /// (`... -READONLY ...` or `... READONLY ...` inside an `ERR` from EVALSHA).
    static func isReadOnlyError(_ token: RESPToken) -> Bool {
        guard let message = token.errorMessage else { return false }
        return message.hasPrefix("READONLY ") || message.contains("READONLY You can't write against a read only")
    }

    private func scheduleTimeout(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        timeoutAt = deadline
        timeoutTask = eventLoop.scheduleTask(deadline: deadline) {
            loopBound.value.checkTimeout()
        }
    }

    private func checkTimeout() {
        timeoutTask = nil
        timeoutAt = .distantFuture
        guard let head = pending.first else { return }
        if head.deadline <= eventLoop.now {
            let error = RedisError(.commandTimeout, "no reply from Redis within the command timeout")
            failAll(error)
            context?.close(promise: nil)
        } else if let context {
            scheduleTimeout(at: head.deadline, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if tlsHandshakePending {
            failAll(RedisError(.tlsFailure, "the connection closed during the TLS handshake"))
        }
        failAll(RedisError(.connectionClosed, "the connection to Redis was closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        let redisError: RedisError
        if let e = error as? RedisError {
            redisError = e
        } else if tlsHandshakePending {
            let text = "\(error)"
            // Say in plain words what BoringSSL's code means; the full error follows.
            let summary =
                text.contains("CERTIFICATE_VERIFY_FAILED")
                ? "the server's certificate does not verify against the trusted CAs (ssl_ca_certs) "
                : ""
            redisError = RedisError(
                .tlsFailure,
                "TLS handshake failed: \(summary)\(text)",
                underlyingError: ErrorBox(error)
            )
        } else {
            redisError = RedisError(.connectionClosed, "connection error: \(error)", underlyingError: error)
        }
        failAll(redisError)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        if closedError == nil { closedError = error }
        closing.set()
        timeoutTask?.cancel()
        timeoutTask = nil
        timeoutAt = .distantFuture
        let waiting = pending
        pending.removeAll()
        for p in waiting { p.replies.fail(error) }
        pushHandler?(.failure(error))
        pushHandler = nil
    }
}

/// Whether a connection's handler has given up on it; shared between the handler and its `RedisConnection`.
final class RedisClosingFlag: Sendable {
    private let value = Atomic<Bool>(false)

    func set() { value.store(true, ordering: .releasing) }

    var isSet: Bool { value.load(ordering: .acquiring) }
}
