import ArgumentParser

struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ping", abstract: "Check the connection to Redis.")
    func run() async throws {}
}
