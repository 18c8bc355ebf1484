import ArgumentParser

/// The options every client subcommand (`send`, `canvas`, `result`) shares: where Redis is, and waiting.
struct ClientOptions: ParsableArguments {
    @Flag(help: "Wait for the result and print it.")
    var wait = false

    @Option(help: "Seconds --wait waits.")
    var timeout: Double = 30

    @Option(name: [.short, .long], help: "Broker URL (the result backend falls back to it).")
    var broker: String?

    @Option(name: .long, help: "Result backend URL.")
    var resultBackend: String?
}
