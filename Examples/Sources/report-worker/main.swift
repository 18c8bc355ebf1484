import CeleryCLI
import ReportTasks

// Every subcommand of `swift-celery` (worker, beat, send, result, canvas, ping, stubs) for this package's tasks:
//     report-worker worker -Q reports -c 8
//     report-worker stubs --module report_tasks --queue reports > report_tasks.py
SwiftCelery.main { registry in
    ReportTasks.register(in: &registry)
}
