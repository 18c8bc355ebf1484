import CeleryCLI

// The worker Celery 5.7's own integration suite runs against (Tests/CelerySuite/run.sh starts it in place of the
// suite's embedded Python worker): `celery-suite-worker worker -c 8`.
SwiftCelery.main(commandName: "celery-suite-worker") { registry in
    IntegrationTasks.register(in: &registry)
}
