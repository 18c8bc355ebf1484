import Testing

@testable import JSON

#if canImport(Glibc)
import Glibc
#endif

/// The process's resident memory in bytes (the second field of `/proc/self/statm`, in pages).
private func residentBytes() -> Int {
    let descriptor = open("/proc/self/statm", O_RDONLY)
    guard descriptor >= 0 else { return 0 }
    defer { close(descriptor) }
    var buffer = [UInt8](repeating: 0, count: 128)
    let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
    guard count > 0 else { return 0 }
    let fields = String(decoding: buffer[..<count], as: UTF8.self).split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// jansson allocates from a per-thread arena while the JSON module parses or serializes (`jansson_arena.c`): these
/// tests check that large and failed documents leave nothing behind and that threads do not share arenas.
@Suite("jansson arena")
struct JanssonArenaTests {
    /// A document with blocks of every size: many small values (more than one chunk), a 1 MB string (a block of
    /// its own) and an object with 5,000 members (its hash table is a large block too).
    static func largeDocument(seed: Int) -> String {
        let members = (0..<5_000).map { #""k\#($0)":[\#($0 + seed),"v\#($0)",null,true,1.5]"# }
        let big = String(repeating: "x", count: 1_000_000)
        return #"{"seed":\#(seed),"big":"\#(big)",\#(members.joined(separator: ","))}"#
    }

    @Test func largeDocumentsRoundTripAndTheArenaShrinksBack() throws {
        _ = try JSONValue(parsing: #"{"warm":"up"}"#)
        let retained = janssonArenaRetainedBytes()
        #expect(retained > 0)

        let text = Self.largeDocument(seed: 7)
        let value = try JSONValue(parsing: text)
        #expect(value["seed"] == 7)
        #expect(value["big"]?.stringValue?.count == 1_000_000)
        #expect(value["k4999"] == [5_006, "v4999", nil, true, 1.5])
        #expect(try JSONValue(parsing: value.serialize()) == value)
        // The chunks and large blocks the document needed are gone; only the first chunk stays.
        #expect(janssonArenaRetainedBytes() == retained)
    }

    @Test func repeatedLargeDocumentsDoNotLeak() throws {
        let text = Self.largeDocument(seed: 1)
        _ = try JSONValue(parsing: text).serialize()
        let before = residentBytes()
        for _ in 0..<50 {
            let value = try JSONValue(parsing: text)
            _ = try value.serialize()
        }
        let grown = residentBytes() - before
        // jansson's blocks for one document take about 5 MB (the string, its buffer, the members): leaking them
        // would grow the process by 250 MB. The margin is for other suites running in the same process.
        #expect(before > 0)
        #expect(grown < 100_000_000, "resident memory grew by \(grown) bytes over 100 documents")
    }

    @Test func aFailedParseReleasesWhatItAllocated() throws {
        _ = try JSONValue(parsing: "[1]")
        let retained = janssonArenaRetainedBytes()
        let before = residentBytes()
        // Valid for a long way (a big string and thousands of members), broken at the very end.
        let broken = String(Self.largeDocument(seed: 3).dropLast()) + ",]"
        for _ in 0..<50 {
            #expect(throws: JSONError.self) { try JSONValue(parsing: broken) }
        }
        #expect(residentBytes() - before < 100_000_000)
        #expect(janssonArenaRetainedBytes() == retained)
        #expect(try JSONValue(parsing: #"{"after":[1,2]}"#) == ["after": [1, 2]])
    }

    @Test func threadsParseAndSerializeAtTheSameTime() async throws {
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for round in 0..<200 {
                        let text = #"{"worker":\#(worker),"round":\#(round),"items":[\#(round),"\#(worker)"]}"#
                        let value = try JSONValue(parsing: text)
                        guard value["worker"]?.intValue == worker, value["round"]?.intValue == round,
                            try value.serialize() == Array(text.utf8)
                        else { return false }
                    }
                    return true
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results == Array(repeating: true, count: 8))
    }
}
