import NIOCore
import Testing

@testable import RESP

@Suite struct RESPTokenTests {
    static let frames: [(String, String)] = [
        ("+OK\r\n", "\"OK\""),
        ("-ERR unknown command\r\n", "(error) ERR unknown command"),
        (":42\r\n", "(integer) 42"),
        (":-9223372036854775808\r\n", "(integer) -9223372036854775808"),
        ("$5\r\nhello\r\n", "\"hello\""),
        ("$0\r\n\r\n", "\"\""),
        ("$-1\r\n", "(nil)"),
        ("*-1\r\n", "(nil)"),
        ("_\r\n", "(nil)"),
        (",3.5\r\n", "(double) 3.5"),
        (",inf\r\n", "(double) inf"),
        ("#t\r\n", "(boolean) true"),
        ("!10\r\nSYNTAX bad\r\n", "(error) SYNTAX bad"),
        ("=15\r\ntxt:Some string\r\n", "\"Some string\""),
        ("(3492890328409238509324850943850943825024385\r\n", "\"3492890328409238509324850943850943825024385\""),
        ("*3\r\n:1\r\n$1\r\na\r\n*1\r\n+x\r\n", "[(integer) 1, \"a\", [\"x\"]]"),
        ("%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n", "{\"a\": (integer) 1, \"b\": (integer) 2}"),
        ("~2\r\n+a\r\n+b\r\n", "[\"a\", \"b\"]"),
        (">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nhey\r\n", "[\"message\", \"ch\", \"hey\"]"),
        ("*0\r\n", "[]"),
    ]

    @Test(arguments: frames)
    func parsesWholeFrame(frame: String, expected: String) throws {
        let token = try RESPToken(parsing: Array(frame.utf8))
        #expect(token.description == expected)
    }

    /// Every frame, and all frames back to back, parse identically when fed one byte at a time.
    @Test func parsesByteAtATime() throws {
        let all = Self.frames.map(\.0).joined()
        var buffer = ByteBuffer()
        var decoded: [String] = []
        for byte in all.utf8 {
            buffer.writeInteger(byte)
            while let token = try RESPToken(consuming: &buffer) {
                decoded.append(token.description)
            }
        }
        #expect(decoded == Self.frames.map(\.1))
        #expect(buffer.readableBytes == 0)
    }

    @Test func incompleteFrameLeavesBufferAlone() throws {
        var buffer = ByteBuffer(string: "*2\r\n$3\r\nfoo\r\n$3\r\nba")
        #expect(try RESPToken(consuming: &buffer) == nil)
        #expect(buffer.readerIndex == 0)
        buffer.writeString("r\r\n")
        let token = try #require(try RESPToken(consuming: &buffer))
        #expect(token.array?.map(\.string) == ["foo", "bar"])
    }

    static let malformed: [(String, RESPParsingError.Code)] = [
        ("?what\r\n", .invalidType),
        ("HTTP/1.1 400 Bad Request\r\n", .invalidType),
        (":12a\r\n", .invalidInteger),
        (":99999999999999999999\r\n", .invalidInteger),
        ("$-2\r\n", .invalidLength),
        ("$abc\r\n", .invalidLength),
        ("$3\r\nabcde\r\n", .missingCRLF),
        ("*-5\r\n", .invalidLength),
        ("%-1\r\n", .invalidLength),
        ("#x\r\n", .invalidBoolean),
        (",abc\r\n", .invalidDouble),
        ("+OK\rX\n", .missingCRLF),
        ("_x\r\n", .invalidNull),
    ]

    @Test(arguments: malformed)
    func rejectsMalformed(frame: String, code: RESPParsingError.Code) {
        #expect(throws: RESPParsingError.self) { _ = try RESPToken(parsing: Array(frame.utf8)) }
        do {
            _ = try RESPToken(parsing: Array(frame.utf8))
        } catch {
            #expect(error.code == code)
        }
    }

    @Test func limitsNesting() throws {
        let deep = String(repeating: "*1\r\n", count: 200) + ":1\r\n"
        var buffer = ByteBuffer(string: deep)
        #expect(throws: RESPParsingError.self) { _ = try RESPToken(consuming: &buffer, depthLimit: 128) }
        let shallow = String(repeating: "*1\r\n", count: 100) + ":1\r\n"
        _ = try RESPToken(parsing: Array(shallow.utf8), depthLimit: 128)
    }

    @Test func accessorsReadBothProtocols() throws {
        let resp2Pairs = try RESPToken(parsing: Array("*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n".utf8))
        let resp3Pairs = try RESPToken(parsing: Array("%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n".utf8))
        #expect(resp2Pairs.pairs?.map { "\($0.key.string!)=\($0.value.int!)" } == ["a=1", "b=2"])
        #expect(resp3Pairs.pairs?.map { "\($0.key.string!)=\($0.value.int!)" } == ["a=1", "b=2"])
        #expect(try RESPToken(parsing: Array("$2\r\n17\r\n".utf8)).int == 17)
        #expect(try RESPToken(parsing: Array(",1.5\r\n".utf8)).double == 1.5)
        #expect(try RESPToken(parsing: Array("-NOSCRIPT x\r\n".utf8)).errorMessage == "NOSCRIPT x")
        #expect(try RESPToken(parsing: Array("_\r\n".utf8)).isNull)
        #expect(try RESPToken(parsing: Array("$-1\r\n".utf8)).isNull)
    }

    @Test func largeBulkString() throws {
        let payload = String(repeating: "x", count: 10_000_000)
        var buffer = ByteBuffer(string: "$\(payload.utf8.count)\r\n")
        #expect(try RESPToken(consuming: &buffer) == nil)
        buffer.writeString(payload)
        buffer.writeString("\r\n")
        let token = try #require(try RESPToken(consuming: &buffer))
        #expect(token.bytes?.readableBytes == 10_000_000)
    }
}
