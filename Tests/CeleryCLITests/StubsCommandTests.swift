import Celery
import JSON
import Testing

@testable import CeleryCLI

@Suite("Python stubs generated from the registry")
struct StubsCommandTests {
    static func registry() -> TaskRegistry {
        var registry = TaskRegistry()
        registry.register(
            "billing.total",
            parameters: ["amounts", "tax"],
            documentation: "Sum \"with\" tax.\nTwo lines."
        ) {
            (_, amounts: [Double], tax: Double?) in amounts.reduce(0, +) * (1 + (tax ?? 0))
        }
        registry.register("raw.echo") { _, arguments in .array(arguments.args) }
        registry.register("other.total", parameters: ["x"]) { (_, x: JSONValue) in x }
        registry.register("weird-name.class", parameters: ["from"]) { (_, value: String) -> NoResult in NoResult() }
        registry.registerBlocking("billing.count", parameters: ["items"]) { (_, items: [String: Int]) in items.count }
        return registry
    }

    @Test("each task becomes a typed stub with its name, parameters, defaults and docstring")
    func typedStubs() {
        let source = PythonStubs(registry: Self.registry(), module: "billing_tasks", queue: "billing").source()
        let lines = source.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.contains(#"    @app.task(name="billing.total", shared=False)"#))
        #expect(lines.contains("    def total(amounts: list[float], tax: float | None = None) -> float:"))
        #expect(lines.contains(#"        "Sum \"with\" tax. Two lines.""#))
        #expect(lines.contains("    def count(items: dict[str, int]) -> int:"))
        #expect(lines.contains("    def echo(*args, **kwargs) -> Any:"))
        #expect(lines.contains(#"        "Runs on the Swift worker.""#))
        // A second `total` is named after the whole task name; a keyword gets an underscore.
        #expect(lines.contains("    def other_total(x: Any) -> Any:"))
        #expect(lines.contains("    def class_(from_: str) -> None:"))
        #expect(lines.contains(#"other_total = app.tasks["other.total"]"#))
        #expect(lines.contains(#"    return env.get("SWIFT_CELERY_QUEUE") or "billing""#))
        #expect(lines.contains(#"    name: str = "billing_tasks","#))
        #expect(lines.contains(#"    "weird-name.class","#))
    }

    @Test("an empty registry still makes a module that defines the app")
    func emptyRegistry() {
        let source = PythonStubs(registry: TaskRegistry(), module: "none", queue: "celery").source()
        #expect(source.contains("def _define_stubs(app: Celery) -> None:\n    pass\n"))
        #expect(source.hasSuffix("app = make_app()\n\n"))
    }

    @Test(
        "identifiers",
        arguments: [
            ("add", "add"), ("with-dash", "with_dash"), ("9lives", "_9lives"), ("lambda", "lambda_"), ("", "_"),
            ("ünï", "_n_"),
        ]
    )
    func identifiers(text: String, expected: String) {
        #expect(PythonStubs.identifier(text) == expected)
        #expect(PythonStubs.isIdentifier(expected))
    }

    @Test("--module must be a Python identifier")
    func moduleValidation() throws {
        #expect(throws: (any Error).self) { try StubsCommand.parse(["--module", "my-tasks"]) }
        #expect(throws: (any Error).self) { try StubsCommand.parse(["--module", "import"]) }
        _ = try StubsCommand.parse(["--module", "my_tasks", "-Q", "reports"])
    }
}
