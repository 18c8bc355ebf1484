"""The swift-celery command line: bad configuration gets a clear error and a non-zero exit, never a hang or a
crash, and never prints a password."""

import os
import socket
import subprocess

import pytest

from conftest import swift_binary

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
