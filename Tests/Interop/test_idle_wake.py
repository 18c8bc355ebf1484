"""The idle wait (`--idle-fetch blmove`, the default): a BLMOVE wake-up that leaves the message in place, then the
atomic pop. Nothing is lost when the worker is killed while idle, and a Python worker in BRPOP on the same queue
is still served."""

import random
import threading
import time

import pytest

from conftest import WorkerProcess, unique
from interop_helpers import encode, envelope, wait_for

pytestmark = pytest.mark.swift_only


def trickle(redis_client, queue, prefix, count):
    """LPUSHes `count` tasks.incr messages 2–8 ms apart (an idle worker waits between them); returns their ids."""
    ids = []
    rng = random.Random(99)
    for i in range(count):
        env = envelope("tasks.incr", (f"{prefix}:{i}",), queue=queue)
        ids.append(env["headers"]["id"])
        redis_client.lpush(queue, encode(env))
        time.sleep(rng.uniform(0.002, 0.008))
    return ids


def missing_results(redis_client, ids):
    pipe = redis_client.pipeline(transaction=False)
    for task_id in ids:
        pipe.exists(f"celery-task-meta-{task_id}")
    return [task_id for task_id, present in zip(ids, pipe.execute()) if not present]


def test_an_idle_worker_blocks_in_blmove_and_leaves_the_message_in_place(redis_url, redis_client):
    queue = unique("interop-idle")
    worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('idle')}@localhost").start()
    try:
        # Idle: one connection per list of the queue (the queue and its 3 priority lists) blocked in BLMOVE.
        def blocked():
            clients = redis_client.execute_command("CLIENT", "LIST")
            if isinstance(clients, bytes):
                clients = clients.decode()
            return sum(1 for line in clients.splitlines() if "cmd=blmove" in line) >= 4
        assert wait_for(blocked, 10), "no connection blocked in BLMOVE"
        env = envelope("tasks.add", (2, 3), queue=queue)
        redis_client.lpush(queue, encode(env))
        assert wait_for(lambda: redis_client.exists(f"celery-task-meta-{env['headers']['id']}"), 10)
        assert redis_client.llen(queue) == 0
        tag = env["properties"]["delivery_tag"]
        assert wait_for(lambda: not redis_client.hexists("unacked", tag), 10), "the message was never acked"
    finally:
        worker.stop()
    assert "Redis refuses BLMOVE" not in "".join(worker.lines)


def test_kill_9_while_idle_loses_nothing(redis_url, redis_client):
    """Messages trickle in while the worker is killed five times: each kill lands mostly in the idle wait or the
    pop right after it. With --acks-late every message is either in the queue or recorded in unacked, so the
    survivor (with a 2 s visibility timeout) runs all of them."""
    queue = unique("interop-idle-kill")
    prefix = unique("idle-kill")
    flags = ["--acks-late", "--visibility-timeout=2"]
    ids: list[str] = []
    done = threading.Event()

    def produce():
        ids.extend(trickle(redis_client, queue, prefix, 600))
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    rng = random.Random(4321)
    kills = 0
    while not done.is_set() and kills < 5:
        worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('idle-kill')}@localhost",
                               flags=flags, concurrency=4).start()
        time.sleep(rng.uniform(0.1, 0.6))
        worker.kill()
        kills += 1
    producer.join(60)
    assert done.is_set()
    survivor = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('idle-survivor')}@localhost",
                             flags=flags, concurrency=8).start()
    try:
        deadline = time.time() + 60
        missing = ids
        while missing and time.time() < deadline:
            missing = missing_results(redis_client, missing)
            if missing:
                time.sleep(0.3)
        assert not missing, f"{len(missing)} of {len(ids)} tasks never got a result after {kills} kill -9"
        counts = [int(c or 0) for c in redis_client.mget([f"{prefix}:{i}" for i in range(len(ids))])]
        assert min(counts) >= 1
    finally:
        survivor.stop()


def test_a_python_worker_in_brpop_on_the_same_queue_is_still_served(redis_url, redis_client):
    """Both workers idle on one queue: Redis answers the Swift worker's BLMOVE without taking the message, so the
    Python worker's BRPOP is served too. Every task runs exactly once."""
    queue = unique("interop-idle-shared")
    prefix = unique("idle-shared")
    python = WorkerProcess("python", redis_url, queue=queue, name=f"{unique('py-idle')}@localhost").start()
    swift = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('swift-idle')}@localhost").start()
    try:
        ids = trickle(redis_client, queue, prefix, 200)
        assert wait_for(lambda: not missing_results(redis_client, ids), 60), "not every task got a result"
        counts = [int(c or 0) for c in redis_client.mget([f"{prefix}:{i}" for i in range(len(ids))])]
        assert counts == [1] * len(ids)
        python_runs = sum(1 for line in python.lines if "tasks.incr" in line and "succeeded" in line)
        assert python_runs > 0, "the Python worker in BRPOP was never served"
    finally:
        swift.stop()
        python.stop()
