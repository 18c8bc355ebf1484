"""The Swift client (`swift-celery send`, `result`, `canvas`) sends tasks that Python Celery 5.7 workers run, and
reads their results back; Python's AsyncResult reads what the Swift client sent."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
from conftest import RESULT_TIMEOUT, swift_binary, unique

T = RESULT_TIMEOUT


def cli(redis_url, *args, timeout=60):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CELERY_BROKER_URL", "REDIS_URL", "CELERY_RESULT_BACKEND", "REDIS_PASSWORD")}
    env["CELERY_BROKER_URL"] = redis_url
    binary = swift_binary()
    if not binary.exists():
        pytest.fail(f"swift-celery binary not found at {binary}")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def test_send_and_wait(redis_url, python_worker):
    out = cli(redis_url, "send", "tasks.add", "2", "3", "-Q", python_worker.queue, "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == 5


def test_arguments_are_json_else_strings(redis_url, python_worker):
    out = cli(redis_url, "send", "tasks.echo", "1", "two", '[3, {"a": null}]', "true", "-Q", python_worker.queue,
              "--kwargs", '{"k": "v"}', "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"args": [1, "two", [3, {"a": None}], True], "kwargs": {"k": "v"}}


def test_send_prints_the_id_that_python_and_result_read(app, redis_url, python_worker):
    task_id = str(uuid.uuid4())
    out = cli(redis_url, "send", "tasks.mul", "6", "7", "-Q", python_worker.queue, "--task-id", task_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == task_id
    assert app.AsyncResult(task_id).get(timeout=T) == 42
    meta = app.backend.get_task_meta(task_id)
    assert meta["worker"] == python_worker.name and meta["queue"] == python_worker.queue
    out = cli(redis_url, "result", task_id)
    assert out.returncode == 0 and json.loads(out.stdout) == 42
    out = cli(redis_url, "result", task_id, "--state")
    assert out.stdout.strip() == "SUCCESS"
    assert cli(redis_url, "result", task_id, "--forget").returncode == 0
    assert app.AsyncResult(task_id).state == "PENDING"


def test_countdown(redis_url, python_worker):
    started = time.monotonic()
    out = cli(redis_url, "send", "tasks.add", "1", "1", "-Q", python_worker.queue, "--countdown", "1", "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == 2
    assert time.monotonic() - started >= 1.0


def test_failure_exits_1_with_the_error(redis_url, python_worker):
    out = cli(redis_url, "send", "tasks.fail", "boom", "-Q", python_worker.queue, "--wait")
    assert out.returncode == 1
    assert "ValueError('boom')" in out.stderr


def test_expired_is_revoked(redis_url, python_worker):
    out = cli(redis_url, "send", "tasks.add", "1", "1", "-Q", python_worker.queue, "--expires=-1", "--wait")
    assert out.returncode == 1
    assert "revoked" in out.stderr and "expired" in out.stderr


def test_timeout_exits_1(redis_url, redis_client):
    queue = unique("nobody")
    try:
        out = cli(redis_url, "send", "tasks.add", "1", "1", "-Q", queue, "--wait", "--timeout", "0.5")
        assert out.returncode == 1
        assert "no result within" in out.stderr
        out = cli(redis_url, "result", str(uuid.uuid4()))
        assert out.returncode == 1 and "PENDING" in out.stderr
    finally:
        redis_client.delete(queue)


@pytest.mark.parametrize("args, message", [
    (["send"], "Missing expected argument"),
    (["send", "tasks.add", "--no-such-flag"], "Unknown option"),
    (["result"], "Missing expected argument"),
    (["send", "tasks.add", "--kwargs", "[1]"], "--kwargs must be a JSON object"),
    (["send", "tasks.add", "--countdown=-3"], "--countdown"),
    (["send", "tasks.add", "--eta", "tomorrow"], "--eta"),
    (["send", "tasks.add", "--priority", "12"], "--priority"),
    (["send", "tasks.add", "--header", "novalue"], "KEY=VALUE"),
    (["canvas", "chain", "tasks.add(1,)"], "not JSON"),
    (["canvas", "chord", "tasks.add(1, 1)"], "--body"),
    (["canvas", "group", "add"], "NAME(ARGS)"),
])
def test_usage_errors_exit_2(redis_url, args, message):
    out = cli(redis_url, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr


def test_chain(redis_url, python_worker):
    out = cli(redis_url, "canvas", "chain", "tasks.add(1, 2)", "tasks.add(3)", "tasks.mul(10)",
              "-Q", python_worker.queue, "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == 60


def test_group(redis_url, python_worker):
    out = cli(redis_url, "canvas", "group", *[f"tasks.add({i}, {i})" for i in range(10)],
              "-Q", python_worker.queue, "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [2 * i for i in range(10)]


def test_chord(app, redis_url, python_worker):
    out = cli(redis_url, "canvas", "chord", *[f"tasks.add({i}, {i})" for i in range(20)],
              "--body", "tasks.xsum()", "-Q", python_worker.queue, "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == sum(2 * i for i in range(20))


def test_chord_with_a_failing_header(redis_url, python_worker):
    out = cli(redis_url, "canvas", "chord", "tasks.add(1, 1)", 'tasks.fail("no")', "--body", "tasks.xsum()",
              "-Q", python_worker.queue, "--wait")
    assert out.returncode == 1
    assert "ChordError" in out.stderr and "ValueError('no')" in out.stderr


def test_immutable_signature_in_a_chain(redis_url, python_worker):
    out = cli(redis_url, "canvas", "chain", "tasks.add(1, 2)", '!tasks.identity("fixed")',
              "-Q", python_worker.queue, "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == "fixed"
