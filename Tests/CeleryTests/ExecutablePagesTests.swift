import CeleryClient
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis
@testable import ProcessTuning

/// The worker gives back the pages of its executable that start-up mapped and never wrote.
struct ExecutablePagesTests {
    /// The layout lld gives a PIE (read-only data, code, the relocated read-only segment, data), then a library and
    /// anonymous memory, as `/proc/PID/smaps` shows it (other keys shortened).
    static let smaps = """
        55d0c0000000-55d0c2000000 r--p 00000000 00:2f 1234                       /opt/swift celery/bin/swift-celery
        Size:              32768 kB
        Rss:                1460 kB
        Anonymous:             0 kB
        VmFlags: rd mr mw me sd
        55d0c2000000-55d0c3800000 r-xp 02000000 00:2f 1234                       /opt/swift celery/bin/swift-celery
        Size:              24576 kB
        Rss:                6208 kB
        Anonymous:             0 kB
        VmFlags: rd ex mr mw me sd
        55d0c3800000-55d0c3900000 r--p 03800000 00:2f 1234                       /opt/swift celery/bin/swift-celery
        Size:               1024 kB
        Rss:                 880 kB
        Anonymous:           880 kB
        VmFlags: rd mr mw me ac sd
        55d0c3900000-55d0c3a00000 rw-p 03900000 00:2f 1234                       /opt/swift celery/bin/swift-celery
        Size:               1024 kB
        Rss:                 400 kB
        Anonymous:           300 kB
        VmFlags: rd wr mr mw me ac sd
        7f0000000000-7f0000100000 r-xp 00000000 00:2f 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
        Size:               1024 kB
        Rss:                1136 kB
        Anonymous:             0 kB
        7f0000200000-7f0000300000 rw-p 00000000 00:00 0
        Rss:                1500 kB
        Anonymous:          1500 kB
        """

    @Test func smapsIsParsedMappingByMapping() {
        let mappings = ExecutablePages.mappings(smaps: Self.smaps)
        #expect(mappings.count == 6)
        #expect(mappings[1].start == 0x55d0_c200_0000 && mappings[1].end == 0x55d0_c380_0000)
        #expect(mappings[1].permissions == "r-xp")
        #expect(mappings[1].path == "/opt/swift celery/bin/swift-celery")
        #expect(mappings[1].resident == 6208 && mappings[1].anonymous == 0)
        #expect(mappings[2].anonymous == 880)
        #expect(mappings[5].path == "" && mappings[5].resident == 1500)
    }

    @Test func onlyTheExecutablesUnwrittenReadOnlyMappingsAreReleased() {
        let mappings = ExecutablePages.mappings(smaps: Self.smaps)
        let released = ExecutablePages.releasable(mappings, executable: "/opt/swift celery/bin/swift-celery")
        // Not the relocated segment (it holds written pages), not the data, not libc, not anonymous memory.
        #expect(released.map(\.permissions) == ["r--p", "r-xp"])
        #expect(released.map(\.start) == [0x55d0_c000_0000, 0x55d0_c200_0000])
        #expect(ExecutablePages.releasable(mappings, executable: "/opt/swift").isEmpty)
    }

    #if os(Linux)
    /// In this very process: its code is released, runs on, and the resident set of those mappings shrinks.
    @Test func releasingThisProcesssCodeKeepsItRunning() throws {
        let released = try #require(ExecutablePages.release())
        #expect(released.mappings >= 1)
        #expect(released.residentBytes > 1 << 20)
        // Code, metadata and relocated pointers all still work after the release.
        let registry = TaskRegistry()
        #expect(registry.names.isEmpty)
        let again = try #require(ExecutablePages.release())
        #expect(again.mappings == released.mappings)
        #expect(again.residentBytes < released.residentBytes)
    }

    /// The arena limit is glibc's to set unless the environment already chose one, and a count of 0 is refused.
    @Test func theArenaLimitYieldsToTheEnvironment() {
        #expect(!ExecutablePages.limitHeapArenas(to: 2, environment: ["MALLOC_ARENA_MAX": "8"]))
        #expect(!ExecutablePages.limitHeapArenas(to: 0, environment: [:]))
        // This test process already has its threads; the limit only bounds the arenas made from now on.
        #expect(ExecutablePages.limitHeapArenas(to: 8, environment: [:]))
    }
    #endif
}
