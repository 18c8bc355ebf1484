import CeleryCLI
import Tasks

// The project's own executable is what a user's package builds: the command line with `tasks/` registered.
SwiftCelery.main(commandName: "swift-celery", commands: [HotPathBenchmarkCommand.self]) { registry in
    TaskCatalog.register(in: &registry)
}
