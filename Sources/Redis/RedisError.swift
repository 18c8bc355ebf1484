/// An error from the Redis client: what went wrong (`code`), a message for people, and the cause if any.
///
/// Messages never contain a password: URLs are printed redacted.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure; compare against the static members.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable {
            case invalidURL
            case connectionRefused
            case connectTimeout
            case commandTimeout
            case connectionClosed
            case authenticationFailed
            case tlsFailure
            case protocolError
            case serverError
            case unexpectedReply
            case notARedisServer
            case subscriptionClosed
            case cancelled
        }
        fileprivate let base: Base
        fileprivate init(_ base: Base) { self.base = base }

        /// The URL could not be parsed.
        public static let invalidURL = Code(.invalidURL)
        /// Nothing listens at the address (TCP RST or no such socket file).
        public static let connectionRefused = Code(.connectionRefused)
        /// The connection or handshake did not complete within the connect timeout.
        public static let connectTimeout = Code(.connectTimeout)
        /// A command got no reply within the command timeout; the connection was closed.
        public static let commandTimeout = Code(.commandTimeout)
        /// The connection closed (by the server, the network or us) while commands were pending.
        public static let connectionClosed = Code(.connectionClosed)
        /// AUTH or HELLO was refused: wrong user or password, or a password is required.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The TLS handshake failed (untrusted certificate, wrong host name, server not speaking TLS).
        public static let tlsFailure = Code(.tlsFailure)
        /// The bytes from the server are not valid RESP; the connection was closed.
        public static let protocolError = Code(.protocolError)
        /// The server answered the command with an error reply (`-ERR ...`).
        public static let serverError = Code(.serverError)
        /// A reply of a shape the caller did not expect (for example a string where an integer was needed).
        public static let unexpectedReply = Code(.unexpectedReply)
        /// The peer answered, but not as a Redis server does.
        public static let notARedisServer = Code(.notARedisServer)
        /// The subscription connection ended.
        public static let subscriptionClosed = Code(.subscriptionClosed)
        /// The calling task was cancelled.
        public static let cancelled = Code(.cancelled)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String
    public var underlyingError: (any Error & Sendable)?
    public var file: String
    public var line: Int

    public init(
        _ code: Code,
        _ message: String,
        underlyingError: (any Error & Sendable)? = nil,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.underlyingError = underlyingError
        self.file = file
        self.line = line
    }

    /// For `serverError`: the error prefix the server used (`ERR`, `NOSCRIPT`, `WRONGPASS`, ...).
    public var serverErrorPrefix: Substring? {
        guard code == .serverError else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }

    public var description: String {
        if let underlyingError {
            return "\(code): \(message) (\(underlyingError))"
        }
        return "\(code): \(message)"
    }
}
