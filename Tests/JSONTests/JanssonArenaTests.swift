import Testing

@testable import JSON

/// jansson allocates from a per-thread arena while the JSON module parses or serializes (`jansson_arena.c`): these
/// tests check that large and failed documents leave nothing behind (the arena counts what it has from malloc) and
/// that threads do not share arenas. Each test is synchronous, so it stays on one thread and sees one arena.
@Suite("jansson arena")
struct JanssonArenaTests {
    /// A document with blocks of every size: many small values (more than one chunk), a 1 MB string (a block of
    /// its own) and an object with 5,000 members (its hash table is a large block too).
    static func largeDocument(seed: Int) -> String {
        let members = (0..<5_000).map { #""k\#($0)":[\#($0 + seed),"v\#($0)",null,true,1.5]"# }
        let big = String(repeating: "x", count: 1_000_000)
        return #"{"seed":\#(seed),"big":"\#(big)",\#(members.joined(separator: ","))}"#
    }

    @Test func largeDocumentsRoundTripAndGiveBackEveryBlock() throws {
        _ = try JSONValue(parsing: #"{"warm":"up"}"#)
        let retained = janssonArenaRetainedBytes()
        #expect(retained > 0)
        #expect(janssonArenaLiveBlocks() == (chunks: 1, large: 0))

        let text = Self.largeDocument(seed: 7)
        for _ in 0..<3 {
            let value = try JSONValue(parsing: text)
            #expect(value["seed"] == 7)
            #expect(value["big"]?.stringValue?.count == 1_000_000)
            #expect(value["k4999"] == [5_006, "v4999", nil, true, 1.5])
            #expect(janssonArenaLiveBlocks() == (chunks: 1, large: 0))
            #expect(try JSONValue(parsing: value.serialize()) == value)
            // The chunks and large blocks the document needed are freed; only the first chunk stays.
            #expect(janssonArenaLiveBlocks() == (chunks: 1, large: 0))
            #expect(janssonArenaRetainedBytes() == retained)
        }
    }

    @Test func aFailedParseGivesBackEveryBlock() throws {
        _ = try JSONValue(parsing: "[1]")
        let retained = janssonArenaRetainedBytes()
        // Valid for a long way (a big string and thousands of members), broken at the very end.
        let broken = String(Self.largeDocument(seed: 3).dropLast()) + ",]"
        for _ in 0..<3 {
            #expect(throws: JSONError.self) { try JSONValue(parsing: broken) }
            #expect(janssonArenaLiveBlocks() == (chunks: 1, large: 0))
        }
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
