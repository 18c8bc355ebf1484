import CJansson
import JanssonArena

/// Runs `body` while jansson allocates from this thread's arena (see `jansson_arena.h`): the trees made inside are
/// released all at once afterwards and need no `json_decref`. Nothing made by jansson inside may be used after
/// `body` returns.
@inline(__always)
func withJanssonArena<Result>(_ body: () -> Result) -> Result {
    swift_celery_json_arena_begin()
    defer { swift_celery_json_arena_end() }
    return body()
}

/// Bytes the calling thread's jansson arena keeps between uses.
package func janssonArenaRetainedBytes() -> Int {
    Int(swift_celery_json_arena_retained_bytes())
}

/// How many chunks and large blocks the calling thread's jansson arena holds from malloc.
package func janssonArenaLiveBlocks() -> (chunks: Int, large: Int) {
    var chunks: UInt = 0
    var large: UInt = 0
    swift_celery_json_arena_live_blocks(&chunks, &large)
    return (Int(chunks), Int(large))
}
