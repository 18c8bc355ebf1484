/// What went wrong in beat: a schedule file that cannot be used, or Redis refusing a step.
public struct BeatError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String { case invalidSchedule, unreadableFile, redis, notLeader }
        private let base: Base

        /// A schedule file or entry is malformed (the message names the entry and the field).
        public static let invalidSchedule = Code(base: .invalidSchedule)
        /// The schedule file cannot be read.
        public static let unreadableFile = Code(base: .unreadableFile)
        /// Redis answered something beat cannot use.
        public static let redis = Code(base: .redis)
        /// This process no longer holds the leader lock.
        public static let notLeader = Code(base: .notLeader)

        public var description: String { base.rawValue }
    }

    /// The kind of failure.
    public var code: Code
    /// A sentence for an operator.
    public var message: String
    /// The error this one wraps, if any.
    public var underlyingError: (any Error)?

    /// Creates an error.
    public init(_ code: Code, _ message: String, underlyingError: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlyingError = underlyingError
    }

    public var description: String { message }
}
