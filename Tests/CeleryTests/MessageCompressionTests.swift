import ExtrasBase64
import JSON
import Testing

@testable import CeleryProtocol

/// kombu's `compression` header: bodies compressed by Python's zlib, bz2 and lzma (as `apply_async(compression=
/// "gzip" / "bzip2" / "lzma")` sends them) decode to the same task; bad streams, unknown methods and bodies that
/// expand past the limit are refused with a reason.
@Suite struct MessageCompressionTests {
    /// `[[2, 3], {}, {"callbacks": null, ...}]` compressed by Python 3.11, base64 as kombu sends it.
    static let bodies: [(header: String, base64: String)] = [
        ("application/x-gzip", "eJyLjjbSUTCO1VGorgVipeTEnJykxOTsYiUrhbzSnBwdBaXUoiI0keSMxMw8ZG5+UQqUWxsLAApsGfI="),
        (
            "application/x-bz2",
            "QlpoOTFBWSZTWaRTNS4AAA+bgFAEGBAACj5tmgogAFQ1AGgANNBKmJqGh6g9QyKDgh7KRfKnlLYiH3BWh+Se77WpIy"
                + "1GQqGFNWw7AESeQGBAcl8XckU4UJCkUzUu"
        ),
        (
            "application/x-lzma",
            "/Td6WFoAAATm1rRGAgAhARYAAAB0L+Wj4ABQADZdAC3gxFghFmYaLE91EEZQl45P+JXz7EBhcwcW3cF2FJS4v+KyE8"
                + "ElvCxsTUIn6T/m2ZkUoqc8AAAAAL+W5h8113PWAAFSUZ/rZ7QftvN9AQAAAAAEWVo="
        ),
    ]
    /// `"[" + 200,000 spaces + "]"` through zlib.
    static let expandingLarge =
        "eJztwUERAAAMAqAq6+Wtfw0z+AdyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        + "AAAAAAAAAAAAAAAMDsCwi1rmg="
    /// `"[" + 5,000 spaces + "]"` through zlib: 32 bytes that expand to 5,002.
    static let expanding = "eJztwUERAAAMAqAq6+Wtfw1T+ANyAAAAAMDcF5nCcdc="

    static func envelope(body: String, compression: JSONValue) -> [UInt8] {
        let envelope: JSONValue = [
            "body": .string(body), "content-encoding": "utf-8", "content-type": "application/json",
            "headers": [
                "lang": "py", "task": "tasks.add", "id": "c0ffee00-0000-4000-8000-000000000001",
                "compression": compression,
            ],
            "properties": [
                "delivery_tag": "tag-1", "body_encoding": "base64",
                "delivery_info": ["exchange": "", "routing_key": "celery"],
            ],
        ]
        return envelope.serialized()
    }

    @Test(arguments: bodies)
    func pythonsCompressedBodiesDecode(header: String, base64: String) throws {
        let message = try TaskMessage(envelope: Self.envelope(body: base64, compression: .string(header)))
        #expect(message.taskName == "tasks.add")
        #expect(message.args == [2, 3])
    }

    @Test(arguments: ["gzip", "zlib", "bzip2", "bzip", "lzma", "xz", "APPLICATION/X-GZIP"])
    func kombusAliasesAreKnown(alias: String) {
        #expect(MessageCompression(header: alias) != nil)
    }

    @Test func anUnknownMethodIsABodyEncodingError() {
        #expect {
            try TaskMessage(envelope: Self.envelope(body: Self.bodies[0].base64, compression: "application/zstd"))
        } throws: { error in
            let error = error as? TaskMessageError
            return error?.code == .bodyEncoding && error?.detail == "unknown compression application/zstd"
                && error?.taskID == "c0ffee00-0000-4000-8000-000000000001"
        }
    }

    @Test func aBrokenStreamIsABodyEncodingError() {
        // zlib data cut short, and bzip2 text under the zlib header.
        let cut = String(Self.bodies[0].base64.prefix(40))
        for (body, header) in [(cut, "zlib"), (Self.bodies[1].base64, "zlib"), (Self.bodies[0].base64, "bzip2")] {
            #expect {
                try TaskMessage(envelope: Self.envelope(body: body, compression: .string(header)))
            } throws: { error in
                (error as? TaskMessageError)?.code == .bodyEncoding
            }
        }
    }

    @Test func theLimitAppliesToTheDecompressedBody() throws {
        let envelope = Self.envelope(body: Self.expanding, compression: "gzip")
        #expect {
            try TaskMessage(envelope: envelope, bodyLimit: 5000)
        } throws: { error in
            let error = error as? TaskMessageError
            return error?.code == .bodyTooLarge
                && error?.detail == "a gzip body of 32 bytes decompresses to more than 5000 bytes"
        }
        // Within the limit it decompresses (and fails later, on its shape: an empty array).
        #expect {
            try TaskMessage(envelope: envelope, bodyLimit: 5002)
        } throws: { error in
            (error as? TaskMessageError)?.code == .bodyShape
        }
    }

    @Test func aLargeBodyDecompressesAcrossChunks() throws {
        // More than one 64 KiB output chunk: a zlib stream of 200,000 spaces inside an array.
        let compressed = try Base64.decode(string: Self.expandingLarge)
        let bytes = try MessageCompression.zlib.decompress(compressed, limit: 1 << 20)
        #expect(bytes.count == 200_002 && bytes.first == UInt8(ascii: "[") && bytes.last == UInt8(ascii: "]"))
    }
}
