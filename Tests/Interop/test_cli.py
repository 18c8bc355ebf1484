"""The swift-celery command line: bad configuration gets a clear error and a non-zero exit, never a hang or a
crash, and never prints a password."""

import os
import re
import socket
import subprocess
import time

import pytest

from conftest import RESULT_TIMEOUT, WorkerProcess, stopped_cleanly, swift_binary, unique
from interop_helpers import wait_for

pytestmark = pytest.mark.swift_only


def run(*args, env=None, timeout=30):
    environment = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "REDIS_URL", "CELERY_RESULT_BACKEND", "REDIS_PASSWORD")}
    environment.update(env or {})
    return subprocess.run([str(swift_binary()), *args], capture_output=True, text=True, timeout=timeout,
                          env=environment, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, message", [
    (["worker", "-c", "0"], "--concurrency must be at least 1"),
    (["worker", "--concurrency", "many"], "concurrency"),
    (["worker", "--prefetch-multiplier=-1"], "--prefetch-multiplier must be 0 or more"),
    (["worker", "--result-expires=-5"], "--result-expires must be 0 or more"),
    (["worker", "-Q", ","], "--queues names no queue"),
    (["worker", "-l", "loud"], "--loglevel must be one of"),
    (["worker", "--idle-page-release", "0"], "--idle-page-release must be more than 0"),
    (["worker", "--idle-page-release", "inf"], "--idle-page-release must be more than 0"),
    (["worker", "--idle-page-release", "nan"], "--idle-page-release must be more than 0"),
    (["worker", "--inline-limit=-1"], "--inline-limit must be between 0 and 1000 milliseconds"),
    (["worker", "--inline-limit", "nan"], "--inline-limit must be between 0 and 1000 milliseconds"),
    (["worker", "--inline-limit", "5000"], "--inline-limit must be between 0 and 1000 milliseconds"),
    (["worker", "--broker", "http://127.0.0.1:6379/0"], "scheme"),
    (["worker", "--broker", "redis://:s3cret-pw@127.0.0.1:6379/notadb"], "database"),
])
def test_bad_worker_configuration(args, message):
    result = run(*args)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message.lower() in output.lower(), output
    assert "s3cret-pw" not in output


def test_bad_url_from_the_environment():
    result = run("worker", env={"CELERY_BROKER_URL": "redis://:env-pw@127.0.0.1:notaport/0"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "port" in output.lower(), output
    assert "env-pw" not in output


def test_worker_waits_for_redis_and_says_why():
    """With nothing listening, the worker does not exit: it logs the cause and retries until stopped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(swift_binary()), "worker", "--broker", f"redis://:pw-123@127.0.0.1:{port}/0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Redis unavailable, retrying" in line:
                break
        assert any("connection refused" in line for line in lines), "".join(lines)
        assert all("pw-123" not in line for line in lines)
        assert proc.poll() is None
        proc.terminate()
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def executable_resident_kib(pid: int) -> int:
    """Resident kilobytes of the mappings of a process's own executable that it may release: not writable, no
    page of its own (Anonymous: 0 kB)."""
    exe = os.readlink(f"/proc/{pid}/exe")
    mappings = []  # [releasable so far, resident]
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", fields[0]):
                ours = len(fields) >= 6 and line.rstrip("\n").endswith(exe) and "w" not in fields[1]
                mappings.append([ours, 0])
            elif mappings and fields[0] == "Rss:":
                mappings[-1][1] = int(fields[1])
            elif mappings and fields[0] == "Anonymous:" and int(fields[1]) > 0:
                mappings[-1][0] = False
    return sum(resident for releasable, resident in mappings if releasable)


def released_kib(worker: WorkerProcess, phase: str, after: int = 0) -> tuple[int, int]:
    """Waits for the worker's n-th "pages released" line of a phase, from line `after` on; (its KiB, its index)."""
    def find():
        for index, line in enumerate(worker.lines[after:], after):
            if "pages released" in line and f"after={phase}" in line:
                return index
        return None
    index = wait_for(find, 10)
    assert index is not None, f"no release after {phase}\n{worker.log()}"
    return int(re.search(r"bytes=(\d+)", worker.lines[index]).group(1)) // 1024, index


def test_worker_releases_its_pages_once_ready_and_when_idle_and_runs_on(redis_url):
    """A second after it is ready, and again after a spell without tasks (--idle-page-release), the worker gives
    back the pages of its executable that it mapped and never wrote (docs/operations.md, Memory); whatever it runs
    afterwards comes back on use, and tasks run as before."""
    from swift_tasks import make_app

    worker = WorkerProcess("swift", redis_url, queue=unique("interop-pages"), name=f"{unique('pages')}@localhost",
                           flags=["-l", "debug", "--idle-page-release", "1"]).start()
    app = make_app("interop-pages", broker=redis_url, backend=redis_url, queue=worker.queue)
    try:
        released, index = released_kib(worker, "start-up")
        assert released > 1024, worker.lines[index]
        assert executable_resident_kib(worker.pid) < released
        # No task ran: an idle spell alone releases nothing more.
        time.sleep(2.5)
        assert not any("after=idle" in line for line in worker.lines), worker.log()
        results = [app.send_task("tasks.add", args=(i, 1), queue=worker.queue) for i in range(200)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == [i + 1 for i in range(200)]
        echoed = app.send_task("tasks.echo", args=("after",), queue=worker.queue).get(timeout=RESULT_TIMEOUT)
        assert echoed == {"args": ["after"], "kwargs": {}}
        busy = executable_resident_kib(worker.pid)
        released, index = released_kib(worker, "idle", after=index + 1)
        assert executable_resident_kib(worker.pid) < busy <= released + 64, worker.lines[index]
        assert app.send_task("tasks.add", args=(40, 2), queue=worker.queue).get(timeout=RESULT_TIMEOUT) == 42
    finally:
        app.close()
        stopped_cleanly(worker)


def thread_heaps(pid: int) -> int:
    """How many heaps glibc's malloc made for threads besides its main one: each is a 64 MiB-aligned reservation,
    read-write as far as it grew and inaccessible beyond, 64 MiB in all."""
    rows = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            rows.append((start, end, fields[1], len(fields) > 5))
    heaps = 0
    for (start, end, permissions, named), following in zip(rows, rows[1:] + [None]):
        if permissions == "rw-p" and not named and start % (64 << 20) == 0:
            if following and following[0] == end and following[2] == "---p":
                end = following[1]
            heaps += end - start == 64 << 20
    return heaps


@pytest.mark.parametrize("arena_max", [None, "8"])
def test_worker_keeps_one_malloc_arena_per_core_unless_the_environment_says(redis_url, monkeypatch, arena_max):
    """The worker's threads share one malloc arena per core, at least two (docs/operations.md, Memory);
    MALLOC_ARENA_MAX in the environment wins."""
    from swift_tasks import make_app

    if arena_max is None:
        monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    else:
        monkeypatch.setenv("MALLOC_ARENA_MAX", arena_max)
    worker = WorkerProcess("swift", redis_url, queue=unique("interop-arenas"), name=f"{unique('arenas')}@localhost",
                           flags=["-c", "4"]).start()
    app = make_app("interop-arenas", broker=redis_url, backend=redis_url, queue=worker.queue)
    try:
        results = [app.send_task("tasks.add", args=(i, 1), queue=worker.queue) for i in range(200)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == [i + 1 for i in range(200)]
        threads = len(os.listdir(f"/proc/{worker.pid}/task"))
        assert threads >= 4, threads
        # Arenas besides the main one: at most one per core less one by default; with the environment's eight per
        # core, every thread that allocated has its own.
        most = max(2, len(os.sched_getaffinity(0))) - 1
        found = thread_heaps(worker.pid)
        assert (found <= most) if arena_max is None else (found > most), (found, most, threads)
    finally:
        app.close()
        stopped_cleanly(worker)


def test_keep_pages_releases_nothing(redis_url):
    worker = WorkerProcess("swift", redis_url, queue=unique("interop-keep"), name=f"{unique('keep')}@localhost",
                           flags=["-l", "debug", "--keep-pages"]).start()
    try:
        time.sleep(2.5)
        assert not any("pages released" in line for line in worker.lines), worker.log()
    finally:
        stopped_cleanly(worker)
