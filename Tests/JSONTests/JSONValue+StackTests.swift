import JSON
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("JSONValue on a small stack")
struct JSONValueStackTests {
    /// Parsing, serializing and destroying a value at the depth limit fits a 1 MiB thread stack (Linux threads get
    /// 8 MiB by default). jansson recurses when it parses and writes: it is what needs most of that stack.
    @Test func deepestValueFitsAOneMebibyteStack() throws {
        let outcome = try Self.runOnThread(stackSize: 1024 * 1024) {
            let depth = JSONValue.maximumDepth
            let text = String(repeating: #"{"k":["#, count: depth / 2) + String(repeating: "]}", count: depth / 2)
            do {
                let value = try JSONValue(parsing: text)
                return try value.serialize() == Array(text.utf8)
            } catch {
                return false
            }
        }
        #expect(outcome)
    }

    /// Destroying a value at the depth limit (Swift releases it recursively) fits a 512 KiB stack.
    @Test func destroyingTheDeepestValueFitsASmallStack() throws {
        let outcome = try Self.runOnThread(stackSize: 512 * 1024) {
            // Built and released on the small thread: it holds the only reference.
            var value: JSONValue = 1
            for _ in 0..<JSONValue.maximumDepth / 2 {
                value = ["k": [value]]
            }
            value = nil
            return value.isNull
        }
        #expect(outcome)
    }

    private final class Box: @unchecked Sendable {
        // Written by the thread before it ends, read only after pthread_join.
        var body: () -> Bool
        var result = false
        init(_ body: @escaping () -> Bool) { self.body = body }
    }

    private static func runOnThread(stackSize: Int, _ body: @escaping () -> Bool) throws -> Bool {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, stackSize)
        let box = Box(body)
        let context = Unmanaged.passRetained(box).toOpaque()
        #if canImport(Glibc)
        var thread = pthread_t()
        #else
        var thread: pthread_t?
        #endif
        let status = pthread_create(
            &thread,
            &attributes,
            { context in
                let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
                box.result = box.body()
                return nil
            },
            context
        )
        try #require(status == 0)
        #if canImport(Glibc)
        pthread_join(thread, nil)
        #else
        pthread_join(thread!, nil)
        #endif
        return box.result
    }
}
