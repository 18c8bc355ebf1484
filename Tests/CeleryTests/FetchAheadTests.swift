import CeleryClient
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The message an idle watcher saw is decoded while the pop travels, and given to the delivery with the same bytes.
struct FetchAheadTests {
    static func message(_ x: Int) throws -> ([UInt8], TaskMessage) {
        let bytes = TestRedis.envelope(task: "tasks.add", args: [.int(x), 1], queue: "ahead").bytes
        return (bytes, try TaskMessage(envelope: bytes))
    }

    @Test func theDeliveryWithTheSameBytesGetsTheDecodedMessage() throws {
        let seen = try Self.message(1)
        let other = try Self.message(2)
        var deliveries = [
            Delivery(list: "ahead", envelope: other.0, tag: "t2"),
            Delivery(list: "ahead", envelope: seen.0, tag: "t1"),
            Delivery(list: "ahead", envelope: seen.0, tag: "t1-again"),
        ]
        Worker.attach(seen, to: &deliveries)
        #expect(deliveries[0].decoded == nil)
        #expect(deliveries[1].decoded?.id == seen.1.id)
        #expect(deliveries[2].decoded == nil)  // only one delivery takes it
    }

    @Test func aPopThatBroughtOtherMessagesGetsNothing() throws {
        let seen = try Self.message(1)
        var deliveries = [Delivery(list: "ahead", envelope: try Self.message(3).0, tag: "t3")]
        Worker.attach(seen, to: &deliveries)
        #expect(deliveries[0].decoded == nil)
        var none: [Delivery] = []
        Worker.attach(seen, to: &none)
        #expect(none.isEmpty)
    }

    /// Held ETA messages keep one delivery each: the decoded message is boxed, not stored inline (88 bytes a
    /// delivery with the box; inline, the suite's 100,000 held ETA tasks took 170.6 MiB instead of 152).
    @Test func aDeliveryStaysSmall() {
        #expect(MemoryLayout<Delivery>.size <= 96, "\(MemoryLayout<Delivery>.size) bytes")
    }

    @Test func envelopesAreTheSameOnlyByteForByte() throws {
        let seen = try Self.message(1).0
        var lastByteChanged = seen
        lastByteChanged[lastByteChanged.count - 1] ^= 1
        #expect(Worker.sameBytes(seen, seen.map { $0 }))  // another buffer, the same bytes
        #expect(!Worker.sameBytes(seen, lastByteChanged))
        #expect(!Worker.sameBytes(seen, Array(seen.dropLast())))
        #expect(Worker.sameBytes([], []))
        #expect(!Worker.sameBytes([], seen))
    }

    @Test func anOversizedDeliveryNeverTakesIt() throws {
        let seen = try Self.message(1)
        var deliveries = [
            Delivery(list: "ahead", envelope: seen.0, tag: nil, oversized: OversizedMessage(scriptReply: []))
        ]
        Worker.attach(seen, to: &deliveries)
        #expect(deliveries[0].decoded == nil)
    }
}
