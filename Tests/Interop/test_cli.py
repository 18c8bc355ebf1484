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
    """Resident kilobytes of the mappings of a process's own executable that are not writable."""
    exe = os.readlink(f"/proc/{pid}/exe")
    total, counting = 0, False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", fields[0]):
                counting = len(fields) >= 6 and line.rstrip("\n").endswith(exe) and "w" not in fields[1]
            elif counting and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_worker_releases_its_start_up_pages_and_runs_on(redis_url):
    """A second after it is ready, the worker gives back the pages of its executable that start-up used (README,
    Memory); whatever it runs afterwards comes back on use, and tasks run as before."""
    from swift_tasks import make_app

    worker = WorkerProcess("swift", redis_url, queue=unique("interop-pages"), name=f"{unique('pages')}@localhost",
                           flags=["-l", "debug"]).start()
    app = make_app("interop-pages", broker=redis_url, backend=redis_url, queue=worker.queue)
    try:
        line = wait_for(lambda: next((l for l in worker.lines if "start-up pages released" in l), None), 10)
        assert line, worker.log()
        released_kib = int(re.search(r"bytes=(\d+)", line).group(1)) // 1024
        assert released_kib > 1024, line
        assert executable_resident_kib(worker.pid) < released_kib
        assert app.send_task("tasks.add", args=(2, 3), queue=worker.queue).get(timeout=RESULT_TIMEOUT) == 5
        echoed = app.send_task("tasks.echo", args=("after",), queue=worker.queue).get(timeout=RESULT_TIMEOUT)
        assert echoed == {"args": ["after"], "kwargs": {}}
    finally:
        app.close()
        stopped_cleanly(worker)


def test_keep_startup_pages_releases_nothing(redis_url):
    worker = WorkerProcess("swift", redis_url, queue=unique("interop-keep"), name=f"{unique('keep')}@localhost",
                           flags=["-l", "debug", "--keep-startup-pages"]).start()
    try:
        time.sleep(2.5)
        assert not any("start-up pages released" in line for line in worker.lines), worker.log()
    finally:
        stopped_cleanly(worker)
