"""Library first: the Python stubs `stubs` generates, and an outside package (Examples/) that runs its own tasks
through `SwiftCelery.main` with the whole command line, driven from Python.

Environment:
    EXAMPLE_WORKER_BIN   the example package's executable (default: Examples/.build/debug/report-worker);
                         scripts/test.sh builds the package from a copy outside the tree, as a new user would, and
                         sets it. Without a binary the example tests are skipped.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, WorkerProcess, stopped_cleanly, swift_binary, unique

STUBS = ROOT / "tasks" / "python" / "swift_tasks" / "__init__.py"


def _stubs(binary: Path, *flags: str) -> str:
    done = subprocess.run([str(binary), "stubs", *flags], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"stubs exited with {done.returncode}: {done.stderr}"
    return done.stdout


def _import_file(path: Path, name: str, env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_committed_stubs_are_what_stubs_generates():
    """tasks/python/swift_tasks is generated: a task added to tasks/Tasks.swift without regenerating fails here."""
    binary = swift_binary()
    if not binary.exists():
        pytest.fail(f"swift-celery binary not found at {binary}")
    assert _stubs(binary) == STUBS.read_text(), (
        "tasks/python/swift_tasks/__init__.py is stale: regenerate it with "
        "`swift-celery stubs > tasks/python/swift_tasks/__init__.py`"
    )


def test_stub_signatures_check_arguments_in_python(tmp_path):
    """The typed stubs carry the Swift parameters: Celery checks a call's arguments against them before sending."""
    module = _import_file(STUBS, "swift_tasks_signature_check", {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    # apply_async checks the arguments before it connects (the broker here is unreachable on purpose).
    with pytest.raises(TypeError):
        module.add.delay(1)  # add(x, y): one missing
    with pytest.raises(TypeError):
        module.fail.delay("a", "b")  # fail(message): one too many
    with pytest.raises(TypeError):
        module.cpu.delay(m=3)  # cpu(n): no parameter m
    routes = module.app.conf.task_routes
    assert routes["tasks.add"] == {"queue": "celery"}
    assert set(routes) == set(module.TASK_NAMES)
    assert "tasks.add" in module.TASK_NAMES and "tasks.cpu" in module.TASK_NAMES


def test_stubs_rejects_a_module_name_python_cannot_import():
    done = subprocess.run([str(swift_binary()), "stubs", "--module", "my-tasks"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "--module must be a Python identifier" in done.stderr


def example_binary() -> Path:
    configured = os.environ.get("EXAMPLE_WORKER_BIN")
    if configured:
        return Path(configured)
    return ROOT / "Examples" / ".build" / "debug" / "report-worker"


@pytest.fixture(scope="module")
def example_worker(redis_url):
    binary = example_binary()
    if not binary.exists():
        pytest.skip(f"the example package is not built ({binary}); scripts/test.sh builds it")
    worker = WorkerProcess("swift", redis_url, queue=unique("interop-example"), name=unique("example") + "@localhost")
    # The example's own executable, not swift-celery: the same `worker` subcommand through SwiftCelery.main.
    original = worker.command

    def command():
        cmd, env, cwd = original()
        cmd[0] = str(binary)
        return cmd, env, cwd

    worker.command = command
    worker.start()
    yield worker
    stopped_cleanly(worker)


def test_example_package_round_trip_from_python(example_worker, redis_url, tmp_path):
    """Python enqueues to the example package's worker through the stubs that package generates, and gets results."""
    binary = example_binary()
    (tmp_path / "report_tasks.py").write_text(_stubs(binary, "--module", "report_tasks", "--queue", "reports"))
    env = dict(os.environ)
    env.update(CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url, SWIFT_CELERY_QUEUE=example_worker.queue,
               PYTHONPATH=str(tmp_path))
    env.pop("REDIS_URL", None)
    region = unique("region")  # a region no earlier run has cached
    done = subprocess.run([sys.executable, str(ROOT / "Examples" / "enqueue.py"), region], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"enqueue.py failed:\n{done.stdout}\n{done.stderr}\n--- worker ---\n" \
                                 f"{example_worker.log()}"
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert float(lines["total"]) == pytest.approx(9.0)
    # FNV-1a of "hello" applied 1000 times, computed here the same way.
    expected = 0xCBF29CE484222325
    for _ in range(1000):
        for byte in b"hello":
            expected = ((expected ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    assert lines["checksum"] == format(expected, "x")
    assert "'cached': False" in lines["region_summary"]
    assert "'cached': True" in lines["region_summary again"]
    assert f"'stores': {len(region) * 7}" in lines["region_summary"]


def test_example_worker_has_the_whole_command_line():
    binary = example_binary()
    if not binary.exists():
        pytest.skip(f"the example package is not built ({binary})")
    done = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for subcommand in ("worker", "beat", "send", "result", "canvas", "ping", "stubs"):
        assert f"  {subcommand}" in done.stdout, done.stdout
    assert "USAGE: report-worker" in done.stdout
    stubs = _stubs(binary, "--module", "report_tasks")
    assert '@app.task(name="reports.total", shared=False)' in stubs
    assert "def total(amounts: list[float], tax: float | None = None) -> float:" in stubs
    assert "tasks.add" not in stubs
