import CeleryClient
import Testing

@testable import Celery
@testable import CeleryProtocol
@testable import CeleryRedis

/// The lists each fetch pops from: kombu's round-robin over the queues, each at every priority step.
struct ConsumedQueuesTests {
    private let p = KombuLayout.separator

    @Test func eachFetchStartsWithTheNextQueue() {
        let queues = ConsumedQueues(["a", "b"])
        let first = queues.nextLists()
        #expect(first == ["a", "b", "a\(p)3", "b\(p)3", "a\(p)6", "b\(p)6", "a\(p)9", "b\(p)9"])
        #expect(queues.current == ["b", "a"])
        #expect(queues.nextLists() == ["b", "a", "b\(p)3", "a\(p)3", "b\(p)6", "a\(p)6", "b\(p)9", "a\(p)9"])
        #expect(queues.nextLists() == first)
    }

    @Test func oneQueueGivesTheSameListsEveryTime() {
        let queues = ConsumedQueues(["celery"])
        let first = queues.nextLists()
        #expect(first == ["celery", "celery\(p)3", "celery\(p)6", "celery\(p)9"])
        for _ in 0..<3 { #expect(queues.nextLists() == first) }
        #expect(queues.current == ["celery"])
    }

    @Test func addedAndCancelledQueuesChangeTheLists() {
        let queues = ConsumedQueues(["a"])
        #expect(queues.add("b"))
        #expect(!queues.add("b"))
        let cycle = [queues.nextLists(), queues.nextLists()]
        #expect(Set(cycle.map { $0.first }) == ["a", "b"])
        queues.remove("a")
        #expect(queues.nextLists() == ["b", "b\(p)3", "b\(p)6", "b\(p)9"])
        #expect(queues.current == ["b"])
        queues.remove("b")
        #expect(queues.nextLists().isEmpty)
        #expect(queues.current.isEmpty)
    }
}
