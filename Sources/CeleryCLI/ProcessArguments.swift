#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's own argument vector, which `ps` and `/proc/PID/cmdline` show.
enum ProcessArguments {
    /// Overwrites, in place, every password in a URL argument (`scheme://user:PASSWORD@host`, `?password=…`,
    /// `?sentinel_password=…`)
    /// with `*`, so `ps` shows no password once the command has parsed its arguments. (Between exec and this call
    /// the password is visible, as for any program: prefer `REDIS_PASSWORD` or a URL in the environment.)
    static func maskPasswords() {
        for index in 1..<Int(CommandLine.argc) {
            guard let argument = CommandLine.unsafeArgv[index] else { continue }
            let length = strlen(argument)
            let bytes = UnsafeMutableBufferPointer(
                start: UnsafeMutablePointer<UInt8>(OpaquePointer(argument)),
                count: length
            )
            for range in passwordRanges(in: UnsafeBufferPointer(bytes)) {
                for offset in range { bytes[offset] = UInt8(ascii: "*") }
            }
        }
    }

    /// The byte ranges of passwords in one argument: after the `:` of a URL's user information, and the values
    /// of `password=` and `sentinel_password=` query parameters.
    static func passwordRanges(in bytes: some RandomAccessCollection<UInt8>) -> [Range<Int>] {
        let text = Array(bytes)
        var ranges: [Range<Int>] = []
        var searchFrom = 0
        while let scheme = find(Array("://".utf8), in: text, from: searchFrom) {
            let authorityStart = scheme + 3
            var authorityEnd = authorityStart
            while authorityEnd < text.count,
                ![UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#")].contains(
                    text[authorityEnd]
                )
            {
                authorityEnd += 1
            }
            // The last "@" ends the user information (an unencoded "@" may be part of the password).
            if let at = text[authorityStart..<authorityEnd].lastIndex(of: UInt8(ascii: "@")),
                let colon = text[authorityStart..<at].firstIndex(of: UInt8(ascii: ":")), colon + 1 < at
            {
                ranges.append(colon + 1..<at)
            }
            searchFrom = authorityEnd
        }
        var parameter = 0
        let key = Array("password=".utf8)
        let sentinelPrefix = Array("sentinel_".utf8)
        let separators = [UInt8(ascii: "?"), UInt8(ascii: "&")]
        while let found = find(key, in: text, from: parameter) {
            let start = found + key.count
            // `password=` and the sentinels' `sentinel_password=` (kombu's Sentinel URLs).
            var name = found
            if name >= sentinelPrefix.count, text[name - sentinelPrefix.count..<name].elementsEqual(sentinelPrefix) {
                name -= sentinelPrefix.count
            }
            let isParameter = name == 0 || separators.contains(text[name - 1])
            var end = start
            while end < text.count, text[end] != UInt8(ascii: "&"), text[end] != UInt8(ascii: "#") { end += 1 }
            if isParameter, end > start { ranges.append(start..<end) }
            parameter = end
        }
        return ranges
    }

    private static func find(_ needle: [UInt8], in text: [UInt8], from start: Int) -> Int? {
        guard needle.count <= text.count else { return nil }
        var index = start
        while index + needle.count <= text.count {
            if text[index..<index + needle.count].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}
