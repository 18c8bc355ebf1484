import Logging
import ProcessTuning

#if canImport(Glibc)
import CMalloc
import Glibc
#endif

/// Gives the page cache back the pages of this program's own executable that the process mapped and never wrote:
/// the code and read-only data that start-up ran and read.
///
/// A program's code is mapped from its file; every page it touches stays in its page tables, and counts in its
/// resident set, until it exits, and the kernel maps up to 64 KiB of neighbouring cached pages around each one
/// ("fault-around"). Argument parsing, configuration and connection set-up run once, yet hold megabytes. Once the
/// worker is ready, ``release()`` unmaps those pages with `madvise(MADV_DONTNEED)`, as an operating system frees
/// its start-up code after boot: the file's pages stay in the page cache, and any page the worker runs again comes
/// back on first use (a minor fault, no disk read). Only mappings of the executable that are not writable and hold
/// no page of their own (`Anonymous: 0 kB` in `/proc/self/smaps`) are released, so nothing written is discarded:
/// the read-only segment the dynamic loader relocated (`.data.rel.ro`) and a page a debugger patched are kept.
package enum ExecutablePages {
    /// What ``release()`` did.
    package struct Release: Sendable, Equatable {
        /// How many mappings of the executable were released.
        package var mappings: Int
        /// The resident bytes they held just before.
        package var residentBytes: Int

        package init(mappings: Int, residentBytes: Int) {
            self.mappings = mappings
            self.residentBytes = residentBytes
        }
    }

    /// One entry of `/proc/PID/smaps`.
    package struct Mapping: Sendable, Equatable {
        package var start: UInt
        package var end: UInt
        package var permissions: String
        package var path: String
        /// Resident kilobytes (`Rss:`).
        package var resident: Int
        /// Kilobytes of the process's own pages in it (`Anonymous:`): written pages of a file mapping.
        package var anonymous: Int

        /// `rw-p`, `-w-p`, …: the second letter of the permissions.
        package var isWritable: Bool { permissions.dropFirst().first == "w" }
    }

    /// Releases the executable's unwritten pages (Linux; elsewhere nothing). Nil when `/proc` cannot be read.
    package static func release() -> Release? {
        #if os(Linux)
        guard let executable = executablePath(), let smaps = readFile("/proc/self/smaps") else { return nil }
        var done = Release(mappings: 0, residentBytes: 0)
        for mapping in releasable(mappings(smaps: smaps), executable: executable) {
            let start = UnsafeMutableRawPointer(bitPattern: mapping.start)
            if madvise(start, Int(mapping.end - mapping.start), MADV_DONTNEED) == 0 {
                done.mappings += 1
                done.residentBytes += mapping.resident * 1024
            }
        }
        return done
        #else
        return Release(mappings: 0, residentBytes: 0)
        #endif
    }

    /// ``release()``, logged at debug level as `pages released` with the phase it followed (the line the worker's
    /// and beat's tests wait for).
    package static func release(after phase: String, logger: Logger) {
        guard let released = release() else { return }
        logger.debug(
            "pages released",
            metadata: [
                "after": "\(phase)", "mappings": "\(released.mappings)", "bytes": "\(released.residentBytes)",
            ]
        )
    }

    /// Returns the heap's free pages to the system (glibc's `malloc_trim(0)`). Elsewhere nothing.
    package static func trimHeap() {
        #if canImport(Glibc)
        _ = malloc_trim(0)
        #endif
    }

    /// Caps the heaps glibc's malloc keeps for threads at `count` (`mallopt(M_ARENA_MAX)`), unless the environment
    /// sets `MALLOC_ARENA_MAX`, which glibc reads itself and which then wins. Call it before threads start.
    ///
    /// glibc gives each thread that allocates a heap ("arena") of its own, up to eight per core: a worker has seven
    /// after start-up. Each keeps the high-water mark of what its thread allocated, and pages pinned by a few live
    /// blocks stay resident after `malloc_trim`. The command line asks for one per core (at least two), so every
    /// thread that can run at once still has an arena to itself: on two cores that keeps about half a MiB less
    /// resident after a burst of tasks, at no measurable cost in throughput (docs/operations.md, Memory).
    /// Returns whether the limit was set. Elsewhere than glibc nothing.
    @discardableResult
    package static func limitHeapArenas(to count: Int32, environment: [String: String]) -> Bool {
        #if canImport(Glibc)
        guard count > 0, environment["MALLOC_ARENA_MAX"] == nil else { return false }
        return mallopt(M_ARENA_MAX, count) == 1
        #else
        return false
        #endif
    }

    /// The mappings of `executable` that can be released without losing anything: not writable, no page written.
    package static func releasable(_ mappings: [Mapping], executable: String) -> [Mapping] {
        mappings.filter { $0.path == executable && !$0.isWritable && $0.anonymous == 0 }
    }

    /// Parses `/proc/PID/smaps`: a header line per mapping (`start-end perms offset dev inode [path]`), then
    /// `Key: value kB` lines.
    package static func mappings(smaps: String) -> [Mapping] {
        var found: [Mapping] = []
        for line in smaps.split(separator: "\n") {
            if let header = header(line) {
                found.append(header)
            } else if !found.isEmpty, let colon = line.firstIndex(of: ":") {
                let key = line[..<colon]
                guard key == "Rss" || key == "Anonymous" else { continue }
                let value = Int(line[line.index(after: colon)...].split(separator: " ").first ?? "") ?? 0
                if key == "Rss" {
                    found[found.count - 1].resident = value
                } else {
                    found[found.count - 1].anonymous = value
                }
            }
        }
        return found
    }

    private static func header(_ line: Substring) -> Mapping? {
        // Fields are separated by runs of spaces; the path, which may hold spaces, is the rest of the line.
        let fields = line.split(separator: " ", maxSplits: 5)
        guard fields.count >= 5, fields[1].count == 4 else { return nil }
        let range = fields[0].split(separator: "-")
        guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16) else {
            return nil
        }
        return Mapping(
            start: start,
            end: end,
            permissions: String(fields[1]),
            path: fields.count == 6 ? String(fields[5].drop { $0 == " " }) : "",
            resident: 0,
            anonymous: 0
        )
    }

    #if os(Linux)
    private static func executablePath() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func readFile(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { return nil }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
    #endif
}
