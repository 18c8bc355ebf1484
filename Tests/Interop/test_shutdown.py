"""Warm shutdown waits for running tasks; a second signal, or --shutdown-timeout, is a cold shutdown that gives
back every unfinished message and stores no failure for the interrupted tasks."""

import json
import signal
import time

import pytest

from conftest import WorkerProcess, unique
from interop_helpers import encode, envelope

pytestmark = pytest.mark.swift_only


def _run_and_stop(redis_url, redis_client, flags, second_signal):
    queue = unique("interop-cold")
    envs = [envelope("tasks.sleep", (30,), queue=queue) for _ in range(2)]
    envs += [envelope("tasks.add", (i, 1), queue=queue) for i in range(3)]
    worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('cold')}@localhost", flags=flags,
                           concurrency=2).start()
    for env in envs:
        redis_client.lpush(queue, encode(env))
    deadline = time.time() + 10
    while redis_client.llen(queue) > 0 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # both sleeps running, the adds reserved behind them
    started = time.time()
    worker.proc.send_signal(signal.SIGTERM)
    if second_signal:
        time.sleep(0.5)
        worker.proc.send_signal(signal.SIGTERM)
    code = worker.proc.wait(timeout=20)
    elapsed = time.time() - started
    back = [json.loads(item) for item in redis_client.lrange(queue, 0, -1)]
    ids = {e["headers"]["id"] for e in back}
    return code, elapsed, ids, envs, worker


@pytest.mark.parametrize("flags", [["--acks-late"], []], ids=["acks-late", "early-ack"])
def test_second_signal_is_a_cold_shutdown_that_gives_everything_back(redis_url, redis_client, flags):
    code, elapsed, ids, envs, worker = _run_and_stop(redis_url, redis_client, flags, second_signal=True)
    assert code == 0, worker.log()
    assert elapsed < 10, "the cold shutdown waited for the 30 s tasks"
    assert ids == {e["headers"]["id"] for e in envs}, worker.log()
    for env in envs:
        assert redis_client.get(f"celery-task-meta-{env['headers']['id']}") is None
        assert not redis_client.hexists("unacked", env["properties"]["delivery_tag"])


def test_shutdown_timeout_turns_a_warm_shutdown_cold(redis_url, redis_client):
    code, elapsed, ids, envs, worker = _run_and_stop(redis_url, redis_client, ["--acks-late", "--shutdown-timeout=1"],
                                                     second_signal=False)
    assert code == 0, worker.log()
    assert 0.9 <= elapsed < 10
    assert ids == {e["headers"]["id"] for e in envs}, worker.log()
