import Celery
import JSON

/// The team's tasks; Python enqueues them through the stubs `report-worker stubs` writes.
public enum ReportTasks {
    /// Registers every task of the package in `registry`.
    public static func register(in registry: inout TaskRegistry) {
        // A typed task: Python's `total.delay([3, 4.5], tax=0.2)` binds as a Python function would.
        registry.register(
            "reports.total",
            parameters: ["amounts", "tax"],
            documentation: "The sum of amounts, plus tax (a fraction) when given."
        ) { (_, amounts: [Double], tax: Double?) in
            let sum = amounts.reduce(0, +)
            return sum * (1 + (tax ?? 0))
        }

        // A blocking task: CPU-bound work runs on a thread pool, off the worker's event loops.
        registry.registerBlocking(
            "reports.checksum",
            parameters: ["text", "rounds"],
            documentation: "An FNV-1a hash of text, applied rounds times (CPU-bound)."
        ) { (_, text: String, rounds: Int) in
            guard rounds >= 1 else { throw PythonException.valueError("rounds must be at least 1, got \(rounds)") }
            return fnv1a(text, rounds: rounds)
        }

        // A task that uses the JSON cache in Redis: the first call for a region computes, the next ones read it.
        registry.register(
            "reports.region_summary",
            parameters: ["region"],
            documentation: "A summary of region, cached in Redis for a minute; says whether it came from the cache."
        ) { (context, region: String) -> [String: JSONValue] in
            var cached = true
            let summary = try await context.cache.value("report:\(region)", ttl: .seconds(60)) {
                cached = false
                return ["region": .string(region), "stores": .int(region.count * 7)]
            }
            return ["summary": summary, "cached": .bool(cached)]
        }
    }

    /// The 64-bit FNV-1a hash of `text`'s UTF-8 bytes, fed `rounds` times, in hexadecimal.
    static func fnv1a(_ text: String, rounds: Int) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for _ in 0..<rounds {
            for byte in text.utf8 {
                hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
            }
        }
        return String(hash, radix: 16)
    }
}
