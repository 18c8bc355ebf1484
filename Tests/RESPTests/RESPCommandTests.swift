import NIOCore
import Testing

@testable import RESP

@Suite struct RESPCommandTests {
    @Test func encodesArrayOfBulkStrings() {
        let command = RESPCommand("SET", "key", "välue", 10)
        #expect(String(buffer: command.buffer) == "*4\r\n$3\r\nSET\r\n$3\r\nkey\r\n$6\r\nvälue\r\n$2\r\n10\r\n")
        #expect(command.count == 4)
        #expect(command.name == "SET")
    }

    @Test func arraysAppendEachElement() {
        let command = RESPCommand("BRPOP", ["a", "b\u{06}\u{16}3"], 1)
        #expect(String(buffer: command.buffer) == "*4\r\n$5\r\nBRPOP\r\n$1\r\na\r\n$4\r\nb\u{06}\u{16}3\r\n$1\r\n1\r\n")
    }

    @Test func headerGrowsPastTenAndHundredArguments() throws {
        var command = RESPCommand("DEL")
        for i in 0..<150 { command.append("k\(i)") }
        #expect(command.count == 151)
        var buffer = command.buffer
        let token = try #require(try RESPToken(consuming: &buffer))
        #expect(token.array?.count == 151)
        #expect(token.array?.last?.string == "k149")
        #expect(buffer.readableBytes == 0)
    }

    @Test func binaryAndBufferArguments() {
        let command = RESPCommand("SET", RESPBytes([0, 13, 10, 255]), ByteBuffer(string: "v"))
        #expect(
            Array(command.buffer.readableBytesView) == Array("*3\r\n$3\r\nSET\r\n$4\r\n".utf8) + [0, 13, 10, 255]
                + Array("\r\n$1\r\nv\r\n".utf8)
        )
    }

    @Test func doublesUseRedisInfinity() {
        let command = RESPCommand("ZRANGE", "z", Double.infinity, -Double.infinity)
        #expect(String(buffer: command.buffer).contains("+inf"))
        #expect(String(buffer: command.buffer).contains("-inf"))
    }

    @Test func integersAreWrittenInDecimalAsStringWouldWriteThem() {
        for value in [0, 7, 10, -1, -10, 1_234_567_890, Int.max, Int.min] {
            let command = RESPCommand("INCRBY", value)
            let text = String(value)
            #expect(String(buffer: command.buffer) == "*2\r\n$6\r\nINCRBY\r\n$\(text.utf8.count)\r\n\(text)\r\n")
        }
    }

    @Test func emptyLargeAndNonContiguousPayloads() throws {
        let large = String(repeating: "x", count: 100_000)
        var command = RESPCommand("SET", "")
        command.append(large)
        command.appendBulk(repeatElement(UInt8(ascii: "y"), count: 3))
        #expect(command.count == 4)
        var buffer = command.buffer
        let token = try #require(try RESPToken(consuming: &buffer))
        let parts = try #require(token.array)
        #expect(parts.map { $0.string?.utf8.count } == [3, 0, 100_000, 3])
        #expect(parts[2].string == large)
        #expect(parts[3].string == "yyy")
        #expect(buffer.readableBytes == 0)
    }
}
