import CeleryProtocol
import CeleryRedis
import ProcessTuning

extension Worker {
    /// Releases the executable's unwritten pages (``ExecutablePages``) a second after the worker is ready, and again
    /// each time it has run no task for ``WorkerConfiguration/idlePageRelease`` after running some, returning the
    /// free heap too. Pages the worker runs again come back on use.
    package func pagesLoop() async {
        await pagesStop.wait(for: .seconds(1))
        guard !isStopping else { return }
        ExecutablePages.release(after: "start-up", logger: logger)
        let period = configuration.idlePageRelease
        var releasedAt = worked.load(ordering: .relaxed)
        var lastSeen = releasedAt
        while !isStopping {
            await pagesStop.wait(for: period)
            guard !isStopping else { return }
            let now = worked.load(ordering: .relaxed)
            // Idle for a whole period, after tasks ran since the last release.
            if now == lastSeen && now != releasedAt {
                ExecutablePages.release(after: "idle", logger: logger)
                ExecutablePages.trimHeap()
                releasedAt = now
            }
            lastSeen = now
        }
    }
}
