import Logging
import RESP
import Redis

/// Measures one client connection: pipelined LPUSH/RPOP throughput and one-at-a-time PING round trips.
///
/// Usage: `RedisClientBenchmark URL [COMMANDS [BATCH [PINGS]]]`; prints `name value` lines for the script.
@main
struct RedisClientBenchmark {
    static func main() async throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 2 else {
            print("usage: RedisClientBenchmark URL [COMMANDS=200000 [BATCH=1000 [PINGS=50000]]]")
            return
        }
        let total = arguments.count > 2 ? Int(arguments[2]) ?? 200_000 : 200_000
        let batch = arguments.count > 3 ? Int(arguments[3]) ?? 1_000 : 1_000
        let pings = arguments.count > 4 ? Int(arguments[4]) ?? 50_000 : 50_000

        var logger = Logger(label: "redis-client-benchmark")
        logger.logLevel = .critical
        let connection = try await RedisConnection.connect(
            configuration: try RedisConfiguration(url: arguments[1]),
            logger: logger
        )
        let key = "swift-celery:benchmark:\(UInt32.random(in: 0...UInt32.max))"
        let payload = String(repeating: "x", count: 3)  // redis-benchmark's default value size
        let clock = ContinuousClock()

        // Warm-up: connection buffers, allocator.
        _ = try await connection.pipeline((0..<batch).map { _ in RESPCommand("LPUSH", key, payload) })
        _ = try await connection.send(RESPCommand("DEL", key))

        let pushStart = clock.now
        for _ in 0..<(total / batch) {
            let replies = try await connection.pipeline((0..<batch).map { _ in RESPCommand("LPUSH", key, payload) })
            guard case .success = replies.last! else { fatalError("LPUSH failed: \(replies.last!)") }
        }
        let pushSeconds = seconds(pushStart.duration(to: clock.now))

        let popStart = clock.now
        for _ in 0..<(total / batch) {
            let replies = try await connection.pipeline((0..<batch).map { _ in RESPCommand("RPOP", key) })
            guard case .success = replies.last! else { fatalError("RPOP failed: \(replies.last!)") }
        }
        let popSeconds = seconds(popStart.duration(to: clock.now))
        _ = try await connection.send(RESPCommand("DEL", key))

        var roundTrips: [Double] = []
        roundTrips.reserveCapacity(pings)
        let ping = RESPCommand("PING")
        let pingStart = clock.now
        for _ in 0..<pings {
            let start = clock.now
            _ = try await connection.send(ping)
            roundTrips.append(seconds(start.duration(to: clock.now)) * 1e6)
        }
        let pingSeconds = seconds(pingStart.duration(to: clock.now))
        roundTrips.sort()
        await connection.close()

        let commands = Double(total / batch * batch)
        print("lpush_pipelined_ops \(Int(commands / pushSeconds))")
        print("rpop_pipelined_ops \(Int(commands / popSeconds))")
        print("ping_ops \(Int(Double(pings) / pingSeconds))")
        print("ping_p50_us \(percentile(roundTrips, 0.50))")
        print("ping_p99_us \(percentile(roundTrips, 0.99))")
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    static func percentile(_ sorted: [Double], _ fraction: Double) -> Int {
        guard !sorted.isEmpty else { return 0 }
        return Int(sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))].rounded())
    }
}
