"""ETA tasks parked in Redis (docs/guarantees.md, "ETA and countdown"): plain tasks never wait behind scheduled ones,
memory stays flat however many are scheduled, nothing is lost or doubled when a worker dies while it parks or
unparks, revokes and `inspect scheduled` keep working, and Python workers on the queue run what comes back."""

from __future__ import annotations

import datetime
import json
import os
import random
import time

import pytest

from conftest import WorkerProcess, stopped_cleanly, unique
from interop_helpers import encode, envelope, wait_for

pytestmark = pytest.mark.swift_only


def parked_key(queue: str) -> str:
    return f"swift-celery:eta:{queue}"


def eta_envelope(task: str, args, queue: str, due: float) -> dict:
    env = envelope(task, args, queue=queue)
    env["headers"]["eta"] = datetime.datetime.fromtimestamp(due, datetime.timezone.utc).isoformat()
    return env


def push_all(redis_client, queue: str, envelopes) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for count, env in enumerate(envelopes, 1):
        pipe.lpush(queue, encode(env))
        if count % 5000 == 0:
            pipe.execute()
    pipe.execute()


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def app_for(redis_url: str, queue: str):
    from swift_tasks import make_app

    return make_app(unique("eta-client"), broker=redis_url, backend=redis_url, queue=queue)


def test_plain_tasks_are_not_starved_by_eta_tasks(redis_url, redis_client):
    """The issue's case: 15,000 tasks with countdown=3600, then 100 plain ones: all 100 finish within seconds."""
    queue = unique("interop-eta-flood")
    app = app_for(redis_url, queue)
    worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('flood')}@localhost",
                           concurrency=16).start()
    try:
        add = app.tasks["tasks.add"]
        # 200 through Celery's own apply_async (countdown), the rest as the same envelopes in a pipeline.
        for i in range(200):
            add.apply_async((i, i), countdown=3600)
        due = time.time() + 3600
        push_all(redis_client, queue, (eta_envelope("tasks.add", (i, i), queue, due) for i in range(14_800)))
        started = time.monotonic()
        plain = [add.delay(i, 1) for i in range(100)]
        assert [r.get(timeout=60) for r in plain] == [i + 1 for i in range(100)]
        elapsed = time.monotonic() - started
        assert wait_for(lambda: redis_client.zcard(parked_key(queue)) == 15_000, 120), \
            f"{redis_client.zcard(parked_key(queue))} of 15,000 parked"
        assert redis_client.llen(queue) == 0
        rss = rss_kib(worker.pid)
        print(f"\n100 plain tasks behind 15,000 countdown=3600 tasks: {elapsed:.2f} s; worker RSS {rss // 1024} MiB")
    finally:
        stopped_cleanly(worker)
        redis_client.delete(parked_key(queue))
        app.close()


@pytest.mark.parametrize("count", [1_000_000])
def test_a_million_parked_eta_tasks_keep_the_worker_under_64_mib(redis_url, redis_client, count):
    """Measured on the binary the image ships (SWIFT_CELERY_IMAGE_BIN, which scripts/test.sh builds), else on the
    default one: the debug build parks a tenth as fast."""
    queue = unique("interop-eta-million")
    due = time.time() + 86_400
    template = encode(eta_envelope("tasks.add", (1, 2), queue, due)).decode()
    tag = template.split('"delivery_tag": "')[1].split('"')[0]
    task_id = template.split('"id": "')[1].split('"')[0]
    # Written by Redis itself: each copy with its own delivery tag and task id (the last 8 characters replaced).
    generate = """
    local template, tagPattern, tag, idPattern, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
    local first, last = tonumber(ARGV[6]), tonumber(ARGV[7])
    for i = first, last do
      local suffix = string.format('%08x', i)
      local text = string.gsub(template, tagPattern, string.sub(tag, 1, -9) .. suffix, 1)
      text = string.gsub(text, idPattern, string.sub(id, 1, -9) .. suffix)
      redis.call('LPUSH', KEYS[1], text)
    end
    return last - first + 1
    """
    script = redis_client.register_script(generate)
    for first in range(0, count, 50_000):
        script(keys=[queue], args=[template, tag.replace("-", "%-"), tag, task_id.replace("-", "%-"), task_id,
                                   first, min(count, first + 50_000) - 1])
    assert redis_client.llen(queue) == count
    worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('million')}@localhost",
                           concurrency=16, binary=os.environ.get("SWIFT_CELERY_IMAGE_BIN")).start()
    try:
        started = time.monotonic()
        assert wait_for(lambda: redis_client.zcard(parked_key(queue)) == count, 1200, interval=1), \
            f"{redis_client.zcard(parked_key(queue))} of {count} parked; {redis_client.llen(queue)} still queued"
        elapsed = time.monotonic() - started
        peak = rss_kib(worker.pid, "VmHWM")
        app = app_for(redis_url, queue)
        try:
            plain = [app.tasks["tasks.add"].delay(i, 1) for i in range(100)]
            assert [r.get(timeout=30) for r in plain] == [i + 1 for i in range(100)]
        finally:
            app.close()
        print(f"\n{count} ETA tasks parked in {elapsed:.0f} s ({count / elapsed:.0f}/s); worker peak RSS "
              f"{peak / 1024:.1f} MiB")
        assert peak < 64 * 1024, f"peak RSS {peak / 1024:.1f} MiB with {count} parked ETA tasks"
    finally:
        stopped_cleanly(worker)
        redis_client.delete(parked_key(queue), queue)


def test_kill_9_while_parking_and_unparking_loses_and_doubles_nothing(redis_url, redis_client):
    queue = unique("interop-eta-kill")
    prefix = unique("eta-kill-count")
    n = 3000
    due = time.time() + 40
    envelopes = [eta_envelope("tasks.incr", (f"{prefix}:{i}",), queue, due) for i in range(n)]
    ids = [env["headers"]["id"] for env in envelopes]
    push_all(redis_client, queue, envelopes)
    # Parked when due further than 4 s ahead; back in the queue 2 s before the ETA.
    flags = ["--acks-late", "--visibility-timeout=2", "--park-eta-after=4"]
    rng = random.Random(31)
    kills = 0
    # While parking: killed at random moments until every message is parked.
    while redis_client.zcard(parked_key(queue)) < n and kills < 4:
        worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('park')}@localhost", flags=flags,
                               concurrency=16).start()
        time.sleep(rng.uniform(0.05, 0.6))
        worker.kill()
        kills += 1
        time.sleep(2.5)  # past the visibility timeout: the next worker restores what the dead one held
    worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('park')}@localhost", flags=flags,
                           concurrency=16).start()
    assert wait_for(lambda: redis_client.zcard(parked_key(queue)) == n, max(1, due - 6 - time.time())), \
        f"{redis_client.zcard(parked_key(queue))} of {n} parked after {kills} kills\n{worker.log()}"
    assert redis_client.llen(queue) == 0
    assert not any(redis_client.exists(f"celery-task-meta-{task_id}") for task_id in ids[:50])
    # While unparking (2 s before the ETA) and holding them until due: killed twice more.
    time.sleep(max(0, due - 2 - time.time()) + 0.1)
    worker.kill()
    worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('unpark')}@localhost", flags=flags,
                           concurrency=16).start()
    time.sleep(0.3)
    worker.kill()
    survivor = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('survivor')}@localhost", flags=flags,
                             concurrency=16).start()
    try:
        def missing():
            pipe = redis_client.pipeline(transaction=False)
            for task_id in ids:
                pipe.exists(f"celery-task-meta-{task_id}")
            return [task_id for task_id, present in zip(ids, pipe.execute()) if not present]

        assert wait_for(lambda: not missing(), 90, interval=0.5), f"{len(missing())} of {n} never ran"
        counts = [int(c or 0) for c in redis_client.mget([f"{prefix}:{i}" for i in range(n)])]
        assert counts == [1] * n, f"runs per task: {sorted(set(counts))}"
        dones = []
        for task_id in ids[:: n // 100]:
            meta = redis_client.get(f"celery-task-meta-{task_id}")
            done = datetime.datetime.fromisoformat(json.loads(meta)["date_done"]).timestamp()
            dones.append(done)
        assert min(dones) >= due - 0.01, "a task ran before its ETA"
        # The kill while holding them leaves them to the visibility restore: late by that (2 s) and a restart.
        assert max(dones) <= due + 30, f"ran {max(dones) - due:.1f} s after its ETA"
        print(f"\n{n} ETA tasks, {kills + 2} kill -9 while parking and unparking: each ran once; "
              f"latest {max(dones) - due:.2f} s after its ETA")
        assert redis_client.zcard(parked_key(queue)) == 0
    finally:
        stopped_cleanly(survivor)


def test_revoke_and_inspect_a_parked_task(redis_url, redis_client):
    queue = unique("interop-eta-revoke")
    app = app_for(redis_url, queue)
    worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('revoke')}@localhost",
                           flags=["--park-eta-after=1"]).start()
    try:
        add = app.tasks["tasks.add"]
        kept = add.apply_async((2, 2), countdown=5)
        revoked = add.apply_async((3, 3), countdown=5)
        assert wait_for(lambda: redis_client.zcard(parked_key(queue)) == 2, 10)
        scheduled = app.control.inspect([worker.name], timeout=5).scheduled()
        entries = scheduled[worker.name]
        assert sorted(entry["request"]["id"] for entry in entries) == sorted([kept.id, revoked.id])
        assert all(entry["request"]["name"] == "tasks.add" and entry["eta"] for entry in entries)
        queried = app.control.inspect([worker.name], timeout=5).query_task(kept.id)[worker.name]
        assert queried[kept.id][0] == "scheduled" and queried[kept.id][1]["args"] == [2, 2]
        app.control.revoke(revoked.id)
        assert kept.get(timeout=20) == 4
        assert wait_for(lambda: revoked.state == "REVOKED", 20), revoked.state
        assert redis_client.zcard(parked_key(queue)) == 0
    finally:
        stopped_cleanly(worker)
        app.close()


def test_a_python_worker_runs_what_a_swift_worker_parked(redis_url, redis_client):
    """The Swift worker parks and is then busy (one slot, a long task): its unparker still moves the messages back
    when due, and the Python worker on the same queue, which never saw them parked, runs them on time."""
    queue = unique("interop-eta-python")
    app = app_for(redis_url, queue)
    swift = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('swift')}@localhost",
                          flags=["--park-eta-after=2", "--prefetch-multiplier=1"], concurrency=1).start()
    python = None
    try:
        add = app.tasks["tasks.add"]
        # Room for a slow start of the Python worker on a loaded machine before the messages come back.
        due = time.time() + 15
        eta = datetime.datetime.fromtimestamp(due, datetime.timezone.utc)
        scheduled = [add.apply_async((i, 1), eta=eta) for i in range(30)]
        assert wait_for(lambda: redis_client.zcard(parked_key(queue)) == 30, 10)
        # Busy until well after the messages are due, so that only the Python worker can take them.
        busy = app.tasks["tasks.sleep"].delay(25)
        assert wait_for(lambda: redis_client.llen(queue) == 0, 5)
        python = WorkerProcess("python", redis_url, queue=queue, name=f"{unique('python')}@localhost",
                               flags=["--result-extended"]).start()
        # Parked, the messages are invisible to the Python worker until 1 s before they are due.
        time.sleep(max(0, due - 1.5 - time.time()))
        assert redis_client.zcard(parked_key(queue)) == 30
        assert [r.get(timeout=30) for r in scheduled] == [i + 1 for i in range(30)]
        for result in scheduled:
            meta = json.loads(redis_client.get(f"celery-task-meta-{result.id}"))
            assert meta["worker"] == python.name, meta
            assert datetime.datetime.fromisoformat(meta["date_done"]).timestamp() >= due - 0.01, meta
        busy.get(timeout=40)
    finally:
        if python is not None:
            stopped_cleanly(python)
        stopped_cleanly(swift)
        app.close()
