import ArgumentParser
import Celery
import CeleryClient
import CeleryProtocol
import CeleryRedis
import Foundation

/// `stubs`: writes a Python module whose Celery tasks carry the registry's names, parameters, types and
/// documentation, routed to the Swift worker's queue, so Python code enqueues with `add.delay(2, 3)`.
struct StubsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stubs",
        abstract: "Write a Python module of typed Celery task stubs for the registered Swift tasks.",
        discussion: """
            The module configures a Celery app from CELERY_BROKER_URL / REDIS_URL, CELERY_RESULT_BACKEND and \
            REDIS_PASSWORD, routes every stub to SWIFT_CELERY_QUEUE (default: the --queue given here), and defines \
            one task per registered name; calling a stub's body in Python raises NotImplementedError.
            """
    )

    @Option(name: .long, help: "The Python module's name (its app's main name).")
    var module = "swift_tasks"

    @Option(
        name: [.customShort("Q"), .long],
        help: "The queue the stubs are routed to when SWIFT_CELERY_QUEUE is unset."
    )
    var queue = "celery"

    @Option(name: [.short, .long], help: "Write to this file instead of standard output.")
    var output: String?

    func validate() throws {
        guard PythonStubs.isIdentifier(module) else {
            throw ValidationError("--module must be a Python identifier, got '\(module)'")
        }
        guard !queue.isEmpty else { throw ValidationError("--queue must not be empty") }
    }

    func run() throws {
        let text = PythonStubs(registry: CommandSetup.current.registry, module: module, queue: queue).source()
        guard let output else {
            FileHandle.standardOutput.write(Data(text.utf8))
            return
        }
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
        } catch {
            throw ValidationError("cannot write \(output): \(error.localizedDescription)")
        }
    }
}

/// The Python source `stubs` writes, made from a registry.
struct PythonStubs {
    var registry: TaskRegistry
    var module: String
    var queue: String

    /// The Python name of each task's stub: the last part of its name, made unique and a valid identifier.
    func stubNames() -> [(task: String, stub: String)] {
        var used: Set<String> = ["app", "make_app", "broker_url", "result_backend_url", "swift_queue", "TASK_NAMES"]
        var result: [(String, String)] = []
        for name in registry.names {
            let last = name.split(separator: ".").last.map(String.init) ?? name
            var stub = Self.identifier(last)
            if used.contains(stub) { stub = Self.identifier(name) }
            var candidate = stub
            var suffix = 2
            while used.contains(candidate) {
                candidate = "\(stub)_\(suffix)"
                suffix += 1
            }
            used.insert(candidate)
            result.append((name, candidate))
        }
        return result
    }

    func source() -> String {
        let stubs = stubNames()
        var lines: [String] = []
        lines.append(
            contentsOf: Self.header(
                module: module,
                queue: queue,
                taskNames: stubs.map(\.task),
                stubNames: stubs.map(\.stub)
            )
        )
        for (index, (name, stub)) in stubs.enumerated() {
            guard let task = registry[name] else { continue }
            if index > 0 { lines.append("") }
            lines.append("    @app.task(name=\(Self.pythonString(name)), shared=False)")
            lines.append("    def \(stub)(\(Self.parameterList(task))) -> \(task.resultType):")
            lines.append("        \(Self.docstring(task.documentation ?? "Runs on the Swift worker."))")
            lines.append("        _not_here(\(Self.pythonString(name)))")
        }
        lines.append("")
        lines.append("")
        lines.append("#: The default app, configured from the environment when this module is imported.")
        lines.append("app = make_app()")
        lines.append("")
        for (name, stub) in stubs {
            lines.append("\(stub) = app.tasks[\(Self.pythonString(name))]")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func parameterList(_ task: RegisteredTask) -> String {
        guard !task.parameters.isEmpty else { return "*args, **kwargs" }
        var parts: [String] = []
        for (index, name) in task.parameters.enumerated() {
            let type = index < task.parameterTypes.count ? task.parameterTypes[index] : (python: "Any", optional: false)
            // JSONValue's Python name is `object` (any JSON value): `Any` in an annotation.
            let annotation = type.python.replacingOccurrences(of: "object", with: "Any")
            parts.append(
                type.optional ? "\(identifier(name)): \(annotation) = None" : "\(identifier(name)): \(annotation)"
            )
        }
        return parts.joined(separator: ", ")
    }

    static let keywords: Set<String> = [
        "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
        "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
    ]

    static func isIdentifier(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic)
        else { return false }
        return text.unicodeScalars.allSatisfy {
            $0 == "_" || ($0.isASCII && $0.properties.isAlphabetic) || ("0"..."9").contains($0)
        }
            && !keywords.contains(text)
    }

    /// `text` as a Python identifier: other characters become `_`, a leading digit or a keyword gets `_`.
    static func identifier(_ text: String) -> String {
        var result = String(
            text.unicodeScalars.map { scalar -> Character in
                scalar == "_" || (scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)))
                    ? Character(scalar) : "_"
            }
        )
        if result.isEmpty || result.first!.isNumber { result = "_" + result }
        if keywords.contains(result) { result += "_" }
        return result
    }

    /// A Python string literal (double-quoted, escaped).
    static func pythonString(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": result += "\\\\"
            case "\"": result += "\\\""
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    result += String(format: "\\x%02x", scalar.value)
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result + "\""
    }

    /// A one-line docstring: the text as a Python string literal (a docstring is the body's first expression).
    static func docstring(_ text: String) -> String {
        pythonString(text.split(whereSeparator: \.isNewline).joined(separator: " "))
    }

    static func header(module: String, queue: String, taskNames: [String], stubNames: [String]) -> [String] {
        var lines = #"""
            """Celery task stubs for the tasks a swift-celery worker runs (generated by `stubs`: do not edit).

            A Python Celery app enqueues work for the Swift worker through these:

                from {{module}} import {{stub}}
                {{stub}}.delay(...).get(timeout=10)   # computed by the Swift worker

            The stubs carry the task names, parameters and routing; their bodies never run in Python. They are
            routed to the queue the Swift worker consumes: {{queue}} unless SWIFT_CELERY_QUEUE says otherwise.

            Configuration (environment):

                CELERY_BROKER_URL / REDIS_URL   broker URL (each falls back to the other; default redis://localhost:6379/0)
                CELERY_RESULT_BACKEND           result backend URL (default: the broker URL)
                REDIS_PASSWORD                  password put into a redis:// or rediss:// URL that has none
                SWIFT_CELERY_QUEUE              queue the stubs are routed to (default: {{queue}})
            """

            from __future__ import annotations

            import os
            from typing import Any
            from urllib.parse import quote, urlsplit, urlunsplit

            from celery import Celery

            DEFAULT_BROKER_URL = "redis://localhost:6379/0"

            #: The names of the tasks the Swift worker runs.
            TASK_NAMES = (
            """#
            .replacingOccurrences(of: "{{module}}", with: module)
            .replacingOccurrences(of: "{{stub}}", with: stubNames.first ?? "task")
            .replacingOccurrences(of: "{{queue}}", with: queue)
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for name in taskNames { lines.append("    \(pythonString(name)),") }
        lines.append(")")
        lines.append(
            contentsOf: #"""


                def _with_password(url: str, password: str | None) -> str:
                    """Put ``password`` into a redis(s):// URL that has no password of its own."""
                    if not password:
                        return url
                    parts = urlsplit(url)
                    if parts.scheme not in ("redis", "rediss") or parts.password:
                        return url
                    user = parts.username or ""
                    host = parts.hostname or "localhost"
                    if ":" in host:
                        host = f"[{host}]"
                    if parts.port:
                        host = f"{host}:{parts.port}"
                    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
                    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


                def broker_url(env=None) -> str:
                    env = os.environ if env is None else env
                    url = env.get("CELERY_BROKER_URL") or env.get("REDIS_URL") or DEFAULT_BROKER_URL
                    return _with_password(url, env.get("REDIS_PASSWORD"))


                def result_backend_url(env=None) -> str:
                    env = os.environ if env is None else env
                    url = env.get("CELERY_RESULT_BACKEND") or broker_url(env)
                    return _with_password(url, env.get("REDIS_PASSWORD"))


                def sentinel_options(url: str, master_name: str | None, env=None) -> dict:
                    """kombu's transport options for a sentinel:// URL: the master name, and the sentinels' password
                    from ``REDIS_SENTINEL_PASSWORD`` (as the Swift worker reads them); empty for other URLs."""
                    env = os.environ if env is None else env
                    if not url.startswith("sentinel://"):
                        return {}
                    options = {"master_name": master_name} if master_name else {}
                    if env.get("REDIS_SENTINEL_PASSWORD"):
                        options["sentinel_kwargs"] = {"password": env["REDIS_SENTINEL_PASSWORD"]}
                    return options


                def swift_queue(env=None) -> str:
                    env = os.environ if env is None else env
                    return env.get("SWIFT_CELERY_QUEUE") or QUEUE_LITERAL


                def make_app(
                    name: str = MODULE_LITERAL,
                    *,
                    broker: str | None = None,
                    backend: str | None = None,
                    queue: str | None = None,
                    stubs: bool = True,
                    **config,
                ) -> Celery:
                    """A Celery app configured from the environment (arguments override it).

                    With ``stubs=True`` the app gets the stub tasks, routed to ``queue``: ``app.tasks[name]``.
                    With ``stubs=False`` it gets only the configuration.
                    """
                    queue = queue or swift_queue()
                    broker, backend = broker or broker_url(), backend or result_backend_url()
                    app = Celery(name, broker=broker, backend=backend)
                    broker_master = os.environ.get("CELERY_BROKER_MASTER_NAME")
                    app.conf.update(
                        task_serializer="json",
                        result_serializer="json",
                        accept_content=["json"],
                        result_accept_content=["json"],
                        task_routes={name: {"queue": queue} for name in TASK_NAMES},
                        broker_connection_retry_on_startup=True,
                        broker_transport_options=sentinel_options(broker, broker_master),
                        result_backend_transport_options=sentinel_options(
                            backend, os.environ.get("CELERY_RESULT_BACKEND_MASTER_NAME") or broker_master
                        ),
                    )
                    app.conf.update(config)
                    if stubs:
                        _define_stubs(app)
                    return app


                def _not_here(name: str):
                    raise NotImplementedError(f"{name} runs on the Swift worker")


                def _define_stubs(app: Celery) -> None:
                """#
                .replacingOccurrences(of: "QUEUE_LITERAL", with: pythonString(queue))
                .replacingOccurrences(of: "MODULE_LITERAL", with: pythonString(module))
                .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        )
        if taskNames.isEmpty { lines.append("    pass") }
        return lines
    }
}
