import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Foundation
import JSON
import Logging
import Redis

/// What `send` and `result` share: the clients from flags and environment, and printing a result.
enum CommandOutput {
    static func error(_ text: String) {
        FileHandle.standardError.write(Data("error: \(text)\n".utf8))
    }

    /// Runs `body` with a client made from the flags and the environment, and closes its connections after.
    static func withClient(
        broker: String?,
        resultBackend: String?,
        queue: String,
        _ body: (CeleryClient) async throws -> Void
    ) async throws {
        let environment = CeleryEnvironment(
            broker: broker,
            resultBackend: resultBackend,
            environment: ProcessInfo.processInfo.environment
        )
        let brokerConfiguration: RedisConfiguration
        let backendConfiguration: RedisConfiguration
        do {
            brokerConfiguration = try environment.brokerConfiguration()
            backendConfiguration = try environment.resultBackendConfiguration()
        } catch {
            Self.error(error.message)
            throw ExitCode(2)
        }
        var logger = Logger(label: "swift-celery.client")
        logger.logLevel = .critical
        let brokerClient = RedisClient(configuration: brokerConfiguration, logger: logger)
        let backendClient =
            backendConfiguration == brokerConfiguration
            ? brokerClient : RedisClient(configuration: backendConfiguration, logger: logger)
        let client = CeleryClient(broker: brokerClient, backend: backendClient, defaultQueue: queue)
        do {
            try await body(client)
        } catch {
            await brokerClient.close()
            await backendClient.close()
            throw error
        }
        await brokerClient.close()
        await backendClient.close()
    }

    /// Waits up to `timeout` seconds; prints the value as JSON (exit 0) or the error (exit 1).
    static func printResult(of result: AsyncResult, timeout: Double) async throws {
        do {
            let value = try await result.get(timeout: .milliseconds(Int64(max(timeout, 0.001) * 1000)))
            print(value.serializedString())
        } catch let failure as TaskFailure {
            error("task \(failure.taskID) \(failure.state == .revoked ? "was revoked" : "failed"): \(failure)")
            throw ExitCode.failure
        } catch let failure as CeleryClientError {
            error(failure.message)
            throw ExitCode.failure
        }
    }
}
