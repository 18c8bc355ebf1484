import NIOCore

/// Runs Swift tasks on a NIO event loop: a task that prefers it (`withTaskExecutorPreference`) resumes on the loop
/// its connections read on, so a reply wakes no other thread and a command written from it needs no hand-over.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
