import FuzzDriver
import NIOCore
import RESP

// libFuzzer entry point for the RESP decoder: the input is the byte stream a server could send.
//
// Checks, beyond "no crash": the stream decodes to the same frames whether it arrives whole or in fragments of
// any size (the first byte picks the fragment size), and every accessor of every frame, nested ones included,
// can be read.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRESP(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    guard let first = input.first else { return 0 }
    let stream = UnsafeBufferPointer(rebasing: input.dropFirst())

    let whole = decode(ByteBuffer(bytes: stream), fragment: max(stream.count, 1))
    let fragmented = decode(ByteBuffer(bytes: stream), fragment: Int(first % 64) + 1)
    precondition(whole.frames == fragmented.frames, "fragmentation changed the decoded frames")
    precondition(whole.error?.code == fragmented.error?.code, "fragmentation changed the parsing error")
    for frame in whole.frames { visit(frame, depth: 0) }
    return 0
}

/// Feeds `bytes` to the decoder `fragment` bytes at a time, as a channel would receive them.
private func decode(_ bytes: ByteBuffer, fragment: Int) -> (frames: [RESPToken], error: RESPParsingError?) {
    var received = ByteBuffer()
    var remaining = bytes
    var frames: [RESPToken] = []
    while true {
        if let chunk = remaining.readSlice(length: min(fragment, remaining.readableBytes)) {
            received.writeImmutableBuffer(chunk)
        }
        do {
            while let token = try RESPToken(consuming: &received) { frames.append(token) }
        } catch {
            return (frames, error)
        }
        if remaining.readableBytes == 0 { return (frames, nil) }
    }
}

/// Reads every accessor of a frame and of everything nested in it.
private func visit(_ token: RESPToken, depth: Int) {
    precondition(depth <= 129, "a frame nested deeper than the decoder's limit")
    _ = token.kind
    _ = token.isError
    _ = token.isNull
    _ = token.errorMessage
    _ = token.bytes
    _ = token.string
    _ = token.int
    _ = token.double
    _ = token.hashValue
    if depth == 0 { _ = token.description }
    switch token.value {
    case .array(let elements), .set(let elements), .push(let elements):
        var count = 0
        for element in elements {
            visit(element, depth: depth + 1)
            count += 1
        }
        precondition(count == elements.count, "an aggregate yielded a different number of elements than it declares")
    case .map(let pairs), .attribute(let pairs):
        var count = 0
        for (key, value) in pairs {
            visit(key, depth: depth + 1)
            visit(value, depth: depth + 1)
            count += 1
        }
        precondition(count == pairs.count, "a map yielded a different number of pairs than it declares")
    default:
        break
    }
    _ = token.array
    _ = token.pairs
}

/// SwiftPM links `main` to `FuzzRESP_main`; hand control to libFuzzer from there.
@_cdecl("FuzzRESP_main")
public func fuzzRESPMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzRESP(data, size) }
}
