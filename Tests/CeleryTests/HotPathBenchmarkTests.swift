import CeleryClient
import Foundation
import JSON
import NIOCore
import RESP
import Testing

@testable import Celery
@testable import CeleryHotPath
@testable import CeleryProtocol
@testable import CeleryRedis

/// The regression benchmark must measure the real path: these check what each phase produced.
@Suite struct HotPathBenchmarkTests {
    @Test func theEnvelopeIsLaidOutAsKombusAndDecodes() throws {
        let bytes = HotPathBenchmark.envelope(taskID: "id-1", x: 4, y: 5, deliveryTag: "tag-1")
        let envelope = try JSONValue(parsing: bytes)
        let fixture = try JSONValue(parsing: try TaskMessageTests.fixture("add-v2.json"))
        #expect(envelope.objectValue?.keys.elements == fixture.objectValue?.keys.elements)
        // The captured message has a custom header and an expiration the benchmark's plain send_task has not.
        let captured = fixture["headers"]?.objectValue?.keys.elements.filter { $0 != "x-custom" }
        #expect(envelope["headers"]?.objectValue?.keys.elements == captured)
        let properties = fixture["properties"]?.objectValue?.keys.elements.filter { $0 != "expiration" }
        #expect(envelope["properties"]?.objectValue?.keys.elements == properties)
        let message = try TaskMessage(envelope: bytes)
        #expect(message.taskName == "tasks.add")
        #expect(message.args == [4, 5])
        #expect(message.deliveryTag == "tag-1")
    }

    @Test(arguments: HotPathBenchmark.Phase.allCases)
    func eachPhaseDoesItsWork(phase: HotPathBenchmark.Phase) async throws {
        let tasks = 70  // one full batch of 64 and a partial one
        let report = try await HotPathBenchmark.run(tasks: tasks, phase: phase)
        #expect(report.tasks == tasks)
        let lastID = HotPathBenchmark.id(tasks - 1, 1)
        switch phase {
        case .inputs:
            #expect(report.payloadBytes > tasks * 900)
            #expect(report.lastTaskID.isEmpty)
        case .decode:
            #expect(report.resultSum == tasks)
            #expect(report.lastTaskID == lastID)
            #expect(report.payloadBytes == 0)
        case .run, .all:
            // tasks.add(n, 1) for n in 0..<70.
            #expect(report.resultSum == (0..<tasks).reduce(0) { $0 + $1 + 1 })
            #expect(report.lastTaskID == lastID)
            let meta = try JSONValue(parsing: report.lastPayload)
            #expect(meta["status"] == "SUCCESS")
            #expect(meta["result"] == .int(tasks))
            #expect(meta["task_id"] == .string(lastID))
            if phase == .all {
                var buffer = ByteBuffer(bytes: report.lastCommand)
                let command = try #require(try RESPToken(consuming: &buffer)?.array)
                let parts = command.map { $0.string ?? "" }
                // The last batch: 70 − 64 results, their acks in the same script.
                #expect(parts.first == "EVALSHA")
                #expect(parts[2] == "8")  // six meta keys, unacked, unacked_index
                #expect(parts[3] == ResultBackend.keyPrefix + HotPathBenchmark.id(64, 1))
                #expect(Array(parts[9...12]) == ["unacked", "unacked_index", "86400", "6"])
                #expect(parts[18] == report.lastPayload)
                #expect(parts.count == 19 + 6)
                #expect(report.commandBytes > report.payloadBytes)
            } else {
                #expect(report.commandBytes == 0)
            }
        }
    }
}
