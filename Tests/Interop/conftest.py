"""Fixtures for the interop suite: a Python Celery 5.7 client against a worker process on a real Redis.

Environment:
    SWIFT_CELERY_TEST_REDIS_URL  redis://127.0.0.1:PORT/0 (scripts/test-redis.sh sets it); without it every
                                 test here is skipped
    INTEROP_WORKER               "swift" (default) or "python": run the Python reference worker
                                 (tasks/python/reference_worker.py) instead, to validate the tests themselves;
                                 tests marked swift_only are skipped then
    SWIFT_CELERY_BIN             the swift-celery binary (default: the newer of .build/debug/swift-celery and
                                 .build/release/swift-celery)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY_TASKS = ROOT / "tasks" / "python"
if str(PY_TASKS) not in sys.path:
    sys.path.insert(0, str(PY_TASKS))

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
RESULT_TIMEOUT = 15.0


def worker_kind() -> str:
    kind = os.environ.get("INTEROP_WORKER", "swift").strip().lower() or "swift"
    if kind not in ("swift", "python"):
        raise pytest.UsageError(f"INTEROP_WORKER must be 'swift' or 'python', not {kind!r}")
    return kind


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "swift_only: expectations defined by the swift-celery spec where Python's worker behaves differently; "
        "skipped when INTEROP_WORKER=python",
    )


def pytest_collection_modifyitems(config, items):
    if worker_kind() != "python":
        return
    skip = pytest.mark.skip(reason="swift_only: Python's reference worker behaves differently here")
    for item in items:
        if "swift_only" in item.keywords:
            item.add_marker(skip)


def swift_binary() -> Path:
    if os.environ.get("SWIFT_CELERY_BIN"):
        return Path(os.environ["SWIFT_CELERY_BIN"])
    # The newer of the two builds: a release binary left from an earlier `scripts/run.sh` must not shadow the debug
    # build that scripts/test.sh has just made.
    builds = [ROOT / ".build" / kind / "swift-celery" for kind in ("debug", "release")]
    existing = [path for path in builds if path.exists()]
    if not existing:
        return builds[0]
    return max(existing, key=lambda path: path.stat().st_mtime)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class WorkerProcess:
    """A worker process (Swift or the Python reference) consuming one queue; its output is kept in memory."""

    def __init__(self, kind: str, redis_url: str, queue: str, name: str, flags=(), concurrency: int | None = None,
                 binary: str | None = None):
        self.kind = kind
        self.binary = Path(binary) if binary else None
        self.redis_url = redis_url
        self.queue = queue
        self.name = name
        self.flags = list(flags)
        self.concurrency = concurrency
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    # The line that says the worker consumes: "worker ready" (Swift), "<name> ready." (Celery).
    def _is_ready_line(self, line: str) -> bool:
        if self.kind == "swift":
            return "worker ready" in line
        return re.search(r"\bready\.", line) is not None

    def command(self):
        if self.kind == "swift":
            binary = self.binary or swift_binary()
            if not binary.exists():
                pytest.fail(f"swift-celery binary not found at {binary}: run `swift build` or set SWIFT_CELERY_BIN")
            cmd = [str(binary), "worker", "--broker", self.redis_url, "--result-backend", self.redis_url,
                   "-Q", self.queue, "-c", str(self.concurrency or 8), "-n", self.name, "-l", "info", *self.flags]
            return cmd, dict(os.environ), str(ROOT)
        env = dict(os.environ)
        env.update(CELERY_BROKER_URL=self.redis_url, CELERY_RESULT_BACKEND=self.redis_url, REDIS_URL=self.redis_url,
                   SWIFT_CELERY_QUEUE=self.queue,  # follow-up messages (chain hops) go back to this queue
                   PYTHONPATH=os.pathsep.join(filter(None, [str(PY_TASKS), env.get("PYTHONPATH")])))
        celery_flags = []
        for flag in self.flags:
            if flag == "-E":
                celery_flags.append(flag)
            elif flag == "--result-extended":
                env["REFERENCE_RESULT_EXTENDED"] = "1"
            elif flag == "--track-started":
                env["REFERENCE_TRACK_STARTED"] = "1"
            elif flag == "--acks-late":
                env["REFERENCE_ACKS_LATE"] = "1"
            elif flag.startswith("--visibility-timeout="):
                env["REFERENCE_VISIBILITY_TIMEOUT"] = flag.split("=", 1)[1]
            else:
                raise ValueError(f"no Python equivalent for {flag}")
        cmd = [sys.executable, "-m", "celery", "-A", "reference_worker", "worker", "-P", "prefork",
               "-c", str(self.concurrency or 2), "-Q", self.queue, "-n", self.name, "-l", "info",
               "--without-gossip", "--without-mingle", "--without-heartbeat", *celery_flags]
        return cmd, env, str(PY_TASKS)

    def start(self):
        cmd, env, cwd = self.command()
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                                     bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.ready.wait(READY_TIMEOUT) or self.proc.poll() is not None:
            code = self.proc.poll()
            self.kill()
            pytest.fail(f"{self.kind} worker on {self.queue} not ready within {READY_TIMEOUT:.0f} s "
                        f"(exit code {code}); command {' '.join(cmd)}\n--- worker log ---\n{self.log()}")
        return self

    def _read(self):
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if not self.ready.is_set() and self._is_ready_line(line):
                self.ready.set()

    def log(self) -> str:
        return "".join(self.lines[-400:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM (warm shutdown); returns the exit code, or None if it had to be killed after STOP_TIMEOUT."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def stopped_cleanly(worker: WorkerProcess):
    was_alive = worker.alive()
    code = worker.stop()
    assert was_alive, f"{worker.kind} worker on {worker.queue} died during the tests\n{worker.log()}"
    assert code == 0, (f"{worker.kind} worker on {worker.queue}: SIGTERM gave exit code {code} "
                       f"(None = still running after {STOP_TIMEOUT:.0f} s)\n--- worker log ---\n{worker.log()}")


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("SWIFT_CELERY_TEST_REDIS_URL")
    if not url:
        pytest.skip("SWIFT_CELERY_TEST_REDIS_URL is not set: run through scripts/test-redis.sh or scripts/test.sh")
    return url


@pytest.fixture(scope="session")
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.ping()
    yield client
    client.close()


def _start(kind, redis_url, prefix, flags=(), concurrency=None):
    name = unique(prefix)
    return WorkerProcess(kind, redis_url, queue=unique(f"interop-{prefix}"), name=f"{name}@localhost",
                         flags=flags, concurrency=concurrency).start()


@pytest.fixture(scope="session")
def worker(redis_url):
    """The worker under test (Swift, or the Python reference with INTEROP_WORKER=python) on its own queue."""
    w = _start(worker_kind(), redis_url, "main")
    yield w
    stopped_cleanly(w)


@pytest.fixture(scope="session")
def extended_worker(redis_url):
    """The worker under test started with --result-extended --track-started, on another queue."""
    w = _start(worker_kind(), redis_url, "ext", flags=["--result-extended", "--track-started"])
    yield w
    stopped_cleanly(w)


@pytest.fixture(scope="session")
def python_worker(redis_url):
    """Always the Python reference worker (result_extended on), on its own queue, next to the worker under test."""
    w = _start("python", redis_url, "py", flags=["--result-extended"])
    yield w
    stopped_cleanly(w)


@pytest.fixture(scope="session")
def app(redis_url, worker):
    """A Python Celery app with the swift_tasks stubs, routed to the worker under test's queue."""
    from swift_tasks import make_app

    celery_app = make_app("interop-client", broker=redis_url, backend=redis_url, queue=worker.queue)
    yield celery_app
    import gc

    gc.collect()  # drop AsyncResults (and their subscriptions) while the interpreter is still whole
    celery_app.close()


@pytest.fixture
def tasks(app):
    """The stubs by short name: tasks.add, tasks.echo, ..."""

    class Tasks:
        def __getattr__(self, short):
            return app.tasks[f"tasks.{short}"]

    return Tasks()
