/// A size in bytes as an operator writes it: `1048576`, `512k`, `64MiB`, `1g` (k/M/G are powers of 1024).
public struct ByteSize: Sendable, Hashable, CustomStringConvertible {
    /// The number of bytes.
    public var bytes: Int

    public init(bytes: Int) {
        self.bytes = bytes
    }

    /// Parses `digits[unit]` where unit is one of b, k, kb, kib, m, mb, mib, g, gb, gib (any case); nil for
    /// anything else, a negative number, or a size that does not fit 64 bits.
    public init?(parsing text: some StringProtocol) {
        let digits = text.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, let number = Int(digits) else { return nil }
        let multiplier: Int
        switch text.dropFirst(digits.count).lowercased() {
        case "", "b": multiplier = 1
        case "k", "kb", "kib": multiplier = 1 << 10
        case "m", "mb", "mib": multiplier = 1 << 20
        case "g", "gb", "gib": multiplier = 1 << 30
        default: return nil
        }
        let (product, overflow) = number.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { return nil }
        self.bytes = product
    }

    /// `64 MiB`, `512 KiB`, `1000 bytes`.
    public var description: String {
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes > 0 && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift) \(unit)"
        }
        return "\(bytes) bytes"
    }
}
