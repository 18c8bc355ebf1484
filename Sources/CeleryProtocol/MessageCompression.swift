#if FUZZING
import CFuzzCompression  // Fuzz/Package.swift builds this file in a package of its own
#else
import CCompression
#endif

/// kombu's message compression (docs/protocol.md §1.1): a `compression` header names how the body was compressed
/// before its `body_encoding`; Celery sets it with `task_compression` or `apply_async(compression=...)`. kombu's
/// names: `application/x-gzip` (aliases `gzip`, `zlib`: a zlib stream, as Python's `zlib.compress` writes it),
/// `application/x-bz2` (`bzip2`, `bzip`) and `application/x-lzma` (`lzma`, `xz`: an xz stream, as
/// `lzma.compress` writes it). Decompression stops at a size limit, so a small message cannot expand into
/// gigabytes.
package enum MessageCompression: Sendable {
    case zlib, bzip2, xz

    /// The method a `compression` header names, nil for one this worker cannot decompress.
    package init?(header: String) {
        switch header.lowercased() {
        case "application/x-gzip", "gzip", "zlib": self = .zlib
        case "application/x-bz2", "bzip2", "bzip": self = .bzip2
        case "application/x-lzma", "lzma", "xz": self = .xz
        default: return nil
        }
    }

    /// Why a body could not be decompressed.
    package enum Failure: Error, Sendable, Equatable {
        /// The data is not a valid stream of the method (the text says what the library said).
        case invalid(String)
        /// It decompresses to more than the limit.
        case tooLarge(limit: Int)
    }

    /// The decompressed bytes, at most `limit` of them.
    package func decompress(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        switch self {
        case .zlib: try Self.zlibDecompress(input, limit: limit)
        case .bzip2: try Self.bunzip(input, limit: limit)
        case .xz: try Self.unxz(input, limit: limit)
        }
    }

    private static let chunk = 64 << 10

    /// Runs `step` until it reports the end of the stream, giving it at most `chunk` bytes of room at a time
    /// (`step` gets the room's address and size and returns whether the stream ended and how much room is left).
    private static func drain(
        limit: Int,
        _ step: (UnsafeMutablePointer<UInt8>, Int) throws(Failure) -> (ended: Bool, left: Int)
    ) throws(Failure) -> [UInt8] {
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        while true {
            let result: Result<(ended: Bool, left: Int), Failure> = buffer.withUnsafeMutableBufferPointer { room in
                do throws(Failure) {
                    return .success(try step(room.baseAddress!, room.count))
                } catch {
                    return .failure(error)
                }
            }
            let (ended, left) = try result.get()
            let produced = chunk - left
            guard output.count + produced <= limit else { throw .tooLarge(limit: limit) }
            output.append(contentsOf: buffer[..<produced])
            if ended { return output }
            if produced == 0 { throw .invalid("the stream ends early") }
        }
    }

    private static func zlibDecompress(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        var stream = z_stream()
        guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw .invalid("zlib could not start")
        }
        defer { inflateEnd(&stream) }
        return try input.withUnsafeBufferPointer { source throws(Failure) in
            stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
            stream.avail_in = UInt32(source.count)
            return try drain(limit: limit) { room, size throws(Failure) in
                stream.next_out = room
                stream.avail_out = UInt32(size)
                let status = inflate(&stream, Z_NO_FLUSH)
                switch status {
                case Z_STREAM_END: return (true, Int(stream.avail_out))
                case Z_OK, Z_BUF_ERROR: return (false, Int(stream.avail_out))
                default:
                    let reason = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                    throw .invalid("zlib: \(reason)")
                }
            }
        }
    }

    private static func bunzip(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        var stream = bz_stream()
        guard BZ2_bzDecompressInit(&stream, 0, 0) == BZ_OK else { throw .invalid("bzip2 could not start") }
        defer { BZ2_bzDecompressEnd(&stream) }
        return try input.withUnsafeBufferPointer { source throws(Failure) in
            source.baseAddress.map {
                stream.next_in = UnsafeMutableRawPointer(mutating: $0).assumingMemoryBound(to: CChar.self)
            }
            stream.avail_in = UInt32(source.count)
            return try drain(limit: limit) { room, size throws(Failure) in
                stream.next_out = UnsafeMutableRawPointer(room).assumingMemoryBound(to: CChar.self)
                stream.avail_out = UInt32(size)
                let status = BZ2_bzDecompress(&stream)
                switch status {
                case BZ_STREAM_END: return (true, Int(stream.avail_out))
                case BZ_OK: return (false, Int(stream.avail_out))
                default: throw .invalid("bzip2: error \(status)")
                }
            }
        }
    }

    private static func unxz(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        var stream = lzma_stream()
        // Any container Python's lzma.decompress reads: xz, and the older .lzma ("alone") format.
        guard lzma_auto_decoder(&stream, UInt64.max, 0) == LZMA_OK else { throw .invalid("xz could not start") }
        defer { lzma_end(&stream) }
        return try input.withUnsafeBufferPointer { source throws(Failure) in
            stream.next_in = source.baseAddress
            stream.avail_in = source.count
            return try drain(limit: limit) { room, size throws(Failure) in
                stream.next_out = room
                stream.avail_out = size
                let status = lzma_code(&stream, stream.avail_in == 0 ? LZMA_FINISH : LZMA_RUN)
                switch status {
                case LZMA_STREAM_END: return (true, stream.avail_out)
                case LZMA_OK, LZMA_BUF_ERROR: return (false, stream.avail_out)
                default: throw .invalid("xz: error \(status.rawValue)")
                }
            }
        }
    }
}
