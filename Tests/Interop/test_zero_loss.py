"""No message a Swift worker popped is lost when the worker is killed with SIGKILL at random moments."""

import random
import time

import pytest

from conftest import WorkerProcess, unique
from interop_helpers import encode, envelope

pytestmark = pytest.mark.swift_only

N = 5000
KILLS = 5


def test_kill_9_five_times_loses_nothing(redis_url, redis_client):
    queue = unique("interop-kill")
    prefix = unique("kill-count")
    ids = []
    pipe = redis_client.pipeline(transaction=False)
    for i in range(N):
        env = envelope("tasks.incr", (f"{prefix}:{i}",), queue=queue)
        ids.append(env["headers"]["id"])
        pipe.lpush(queue, encode(env))
    pipe.execute()

    flags = ["--acks-late", "--visibility-timeout=2"]
    rng = random.Random(1234)
    for kill in range(KILLS):
        worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('kill')}@localhost", flags=flags,
                               concurrency=16).start()
        time.sleep(rng.uniform(0.05, 0.8))
        worker.kill()  # SIGKILL: no warm shutdown, no restore, no flush

    survivor = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('survivor')}@localhost", flags=flags,
                             concurrency=16).start()
    try:
        deadline = time.time() + 180
        missing = ids
        while missing and time.time() < deadline:
            pipe = redis_client.pipeline(transaction=False)
            for task_id in missing:
                pipe.exists(f"celery-task-meta-{task_id}")
            missing = [task_id for task_id, present in zip(missing, pipe.execute()) if not present]
            if missing:
                time.sleep(0.5)
        assert not missing, f"{len(missing)} of {N} tasks never got a result"
        counts = [int(c or 0) for c in redis_client.mget([f"{prefix}:{i}" for i in range(N)])]
        assert min(counts) >= 1
        duplicates = sum(c - 1 for c in counts)
        print(f"\n{N} tasks, {KILLS} kill -9: all results present; {duplicates} duplicate runs (at-least-once)")
        assert redis_client.llen(queue) == 0
    finally:
        survivor.stop()
