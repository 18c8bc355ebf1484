"""Remote control (`celery inspect` / `celery control` over the pidbox), shared revocation and rate limits, driven by
Python Celery 5.7's own CLI and control API against a running worker.

Every test addresses its own worker by name (`-d` / destination), so the other workers on the same Redis stay out.
With INTEROP_WORKER=python the tests not marked swift_only run against Celery's own worker, which is how the
expected answers were checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from conftest import PY_TASKS, RESULT_TIMEOUT, WorkerProcess, stopped_cleanly, unique, worker_kind
from interop_helpers import wait_for


def start_worker(redis_url, prefix, kind=None, flags=(), concurrency=None, queue=None):
    name = f"{unique(prefix)}@localhost"
    return WorkerProcess(kind or worker_kind(), redis_url, queue=queue or unique(f"interop-{prefix}"), name=name,
                         flags=flags, concurrency=concurrency).start()


@pytest.fixture(scope="module")
def ctl_worker(redis_url):
    w = start_worker(redis_url, "ctl", concurrency=4)
    yield w
    stopped_cleanly(w)


@pytest.fixture(scope="module")
def ctl_app(redis_url, ctl_worker):
    from swift_tasks import make_app

    app = make_app("interop-control", broker=redis_url, backend=redis_url, queue=ctl_worker.queue)
    yield app
    app.close()


def celery_cli(redis_url, *args, timeout=60):
    """`celery -A swift_tasks ARGS...` as an operator runs it; returns (exit code, stdout, stderr)."""
    env = dict(os.environ, CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url,
               PYTHONPATH=os.pathsep.join(filter(None, [str(PY_TASKS), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "swift_tasks", *args], env=env, cwd=str(PY_TASKS),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def inspect_json(redis_url, worker, command, *args):
    code, out, err = celery_cli(redis_url, "inspect", command, *args, "-d", worker.name, "-t", "10", "--json")
    assert code == 0, f"celery inspect {command}: exit {code}\n{out}\n{err}\n--- worker ---\n{worker.log()}"
    replies = json.loads(out.strip().splitlines()[-1])
    assert list(replies) == [worker.name], replies
    return replies[worker.name]


def inspect(app, worker):
    return app.control.inspect(destination=[worker.name], timeout=5)


def meta(redis_client, task_id):
    raw = redis_client.get(f"celery-task-meta-{task_id}")
    return json.loads(raw) if raw else None


def test_cli_inspect_ping_and_registered(redis_url, ctl_worker):
    assert inspect_json(redis_url, ctl_worker, "ping") == {"ok": "pong"}
    registered = inspect_json(redis_url, ctl_worker, "registered")
    for name in ("tasks.add", "tasks.sleep", "tasks.echo"):
        assert name in registered
    assert registered == sorted(registered)


def test_cli_inspect_active_shows_a_running_task(redis_url, ctl_worker, ctl_app):
    result = ctl_app.tasks["tasks.sleep"].delay(2.5)
    active = wait_for(lambda: [r for r in inspect_json(redis_url, ctl_worker, "active") if r["id"] == result.id], 10)
    assert active, ctl_worker.log()
    request = active[0]
    assert request["name"] == "tasks.sleep" and request["type"] == "tasks.sleep"
    assert request["args"] == [2.5] and request["kwargs"] == {}
    assert request["hostname"] == ctl_worker.name
    assert request["acknowledged"] is True
    assert isinstance(request["time_start"], float) and abs(request["time_start"] - time.time()) < 30
    assert isinstance(request["worker_pid"], int)
    assert request["delivery_info"] == {"exchange": "", "routing_key": ctl_worker.queue, "priority": 0,
                                        "redelivered": False}
    assert result.get(timeout=RESULT_TIMEOUT) == 2.5


def test_scheduled_query_task_stats_conf(ctl_app, ctl_worker, redis_client):
    later = ctl_app.tasks["tasks.add"].apply_async((1, 2), countdown=60, priority=6)
    i = inspect(ctl_app, ctl_worker)
    scheduled = wait_for(lambda: [s for s in (i.scheduled() or {}).get(ctl_worker.name, [])
                                  if s["request"]["id"] == later.id], 10)
    assert scheduled, ctl_worker.log()
    entry = scheduled[0]
    assert entry["priority"] == 6
    assert entry["eta"].endswith("+00:00")
    assert entry["request"]["name"] == "tasks.add" and entry["request"]["args"] == [1, 2]
    assert entry["request"]["time_start"] is None and entry["request"]["acknowledged"] is False
    assert entry["request"]["delivery_info"]["priority"] == 6

    queried = i.query_task(later.id)[ctl_worker.name]
    assert queried[later.id][0] == "scheduled"
    assert queried[later.id][1]["id"] == later.id
    assert i.reserved()[ctl_worker.name] == []

    stats = i.stats()[ctl_worker.name]
    for key in ("total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"):
        assert key in stats, stats
    assert stats["pool"]["max-concurrency"] == 4
    assert stats["prefetch_count"] >= 16  # concurrency × 4 (Python adds one per held ETA task)
    assert stats["broker"]["transport"] == "redis"
    assert "broker_url" in i.conf()[ctl_worker.name]

    # `celery control revoke` from the CLI: REVOKED is stored at once, and the task never runs.
    code, out, err = celery_cli(ctl_app.conf.broker_url, "control", "revoke", later.id, "-d", ctl_worker.name,
                                "-t", "10")
    assert code == 0, out + err
    assert later.id in out
    stored = wait_for(lambda: meta(redis_client, later.id), 10)
    assert stored and stored["status"] == "REVOKED", stored
    assert stored["result"] == {"exc_type": "TaskRevokedError", "exc_message": ["revoked"],
                                "exc_module": "celery.exceptions"}
    assert later.id in i.revoked()[ctl_worker.name]


def test_control_replies_as_celery(ctl_app, ctl_worker):
    c = ctl_app.control
    d = [ctl_worker.name]
    name = ctl_worker.name
    assert c.broadcast("nosuchcmd", destination=d, reply=True) == [{name: {"error": "KeyError('nosuchcmd')"}}]
    assert c.time_limit("tasks.sleep", soft=30, hard=60, destination=d, reply=True) == \
        [{name: {"ok": "time limits set successfully"}}]
    assert c.time_limit("no.such.task", soft=1, destination=d, reply=True) == [{name: {"error": "unknown task"}}]
    assert c.rate_limit("no.such.task", "1/s", destination=d, reply=True) == [{name: {"error": "unknown task"}}]
    assert c.rate_limit("tasks.add", "abc", destination=d, reply=True) == \
        [{name: {"error": "Invalid rate limit string: ValueError(\"could not convert string to float: 'abc'\")"}}]
    reply = c.broadcast("hello", arguments={"from_node": "other@elsewhere", "revoked": []}, destination=d,
                        reply=True)
    assert isinstance(reply[0][name]["revoked"], list) and isinstance(reply[0][name]["clock"], int)
    # A pattern that does not match gets no answer; one that does, answers.
    assert c.ping(pattern="nobody-*", matcher="glob", timeout=0.5) == []
    assert c.ping(pattern=name.split("@")[0][:6] + "*", matcher="glob", timeout=2) == [{name: {"ok": "pong"}}]


def test_rate_limit_set_at_run_time(ctl_app, ctl_worker, redis_client):
    c = ctl_app.control
    d = [ctl_worker.name]
    assert c.rate_limit("tasks.add", "5/s", destination=d, reply=True) == \
        [{ctl_worker.name: {"ok": "new rate limit set successfully"}}]
    try:
        assert "tasks.add [rate_limit=5/s]" in inspect(ctl_app, ctl_worker).registered()[ctl_worker.name]
        results = [ctl_app.tasks["tasks.add"].delay(i, 0) for i in range(6)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == list(range(6))
        done = sorted(meta(redis_client, r.id)["date_done"] for r in results)
        from datetime import datetime

        spread = (datetime.fromisoformat(done[-1]) - datetime.fromisoformat(done[0])).total_seconds()
        # Six tasks at 5/s: the last starts 1 s after the first (the bucket holds one token, no bursts).
        assert spread >= 0.8, done
    finally:
        assert c.rate_limit("tasks.add", None, destination=d, reply=True) == \
            [{ctl_worker.name: {"ok": "rate limit disabled successfully"}}]
    assert "tasks.add" in inspect(ctl_app, ctl_worker).registered()[ctl_worker.name]


def test_add_and_cancel_consumer(ctl_app, ctl_worker, redis_client):
    extra = unique("interop-extra")
    d = [ctl_worker.name]
    name = ctl_worker.name

    def consumed():
        return [q["name"] for q in inspect(ctl_app, ctl_worker).active_queues()[name]]

    assert ctl_app.control.add_consumer(extra, destination=d, reply=True) == [{name: {"ok": f"add consumer {extra}"}}]
    assert ctl_app.tasks["tasks.add"].apply_async((3, 4), queue=extra).get(timeout=RESULT_TIMEOUT) == 7
    assert extra in consumed() and ctl_worker.queue in consumed()
    assert ctl_app.control.cancel_consumer(extra, destination=d, reply=True) == \
        [{name: {"ok": f"no longer consuming from {extra}"}}]
    assert wait_for(lambda: extra not in consumed(), 10)
    if worker_kind() == "swift":
        # (A Python worker's BRPOP in flight still lists the queue for up to 1 s, so it may take one more.)
        ctl_app.tasks["tasks.add"].apply_async((1, 1), queue=extra)
        assert not wait_for(lambda: redis_client.llen(extra) == 0, 1.5), "a cancelled queue was still consumed"
    assert ctl_app.tasks["tasks.add"].delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5  # its own queue still is
    redis_client.delete(extra)


@pytest.mark.swift_only
def test_revoke_terminate_cancels_a_running_task(ctl_app, ctl_worker, redis_client):
    result = ctl_app.tasks["tasks.sleep"].delay(30)
    i = inspect(ctl_app, ctl_worker)
    assert wait_for(lambda: [r for r in (i.active() or {}).get(ctl_worker.name, []) if r["id"] == result.id], 10), \
        ctl_worker.log()
    started = time.time()
    reply = ctl_app.control.revoke(result.id, terminate=True, destination=[ctl_worker.name], reply=True)
    assert reply == [{ctl_worker.name: {"ok": f"terminate: {result.id}"}}]
    stored = wait_for(lambda: (meta(redis_client, result.id) or {}).get("status") == "REVOKED"
                      and meta(redis_client, result.id), 10)
    assert stored, ctl_worker.log()
    assert stored["result"]["exc_message"] == ["terminated"]
    assert time.time() - started < 10
    assert not [r for r in i.active()[ctl_worker.name] if r["id"] == result.id]
    # The slot is free again.
    assert ctl_app.tasks["tasks.add"].delay(2, 2).get(timeout=RESULT_TIMEOUT) == 4


@pytest.mark.swift_only
def test_revoke_reaches_a_worker_started_afterwards(redis_url, ctl_app, ctl_worker, redis_client):
    """The revoke goes to one worker only; a worker started later learns it from Redis and does not run the task."""
    key = unique("revoked-incr")
    task_id = str(uuid.uuid4())
    ctl_app.control.revoke(task_id, destination=[ctl_worker.name], reply=True)
    assert redis_client.zscore("swift-celery:revoked", task_id) is not None
    first = wait_for(lambda: meta(redis_client, task_id), 10)  # stored by the revoke command: "children": null
    assert first and first["status"] == "REVOKED" and first["children"] is None, first
    redis_client.delete(f"celery-task-meta-{task_id}")  # from here on only the late worker may write it
    queue = unique("interop-late")
    ctl_app.tasks["tasks.incr"].apply_async((key,), task_id=task_id, queue=queue)
    late = start_worker(redis_url, "late", queue=queue)
    try:
        stored = wait_for(lambda: meta(redis_client, task_id), 15)
        assert stored and stored["status"] == "REVOKED", late.log()
        assert stored["children"] == []  # written by the late worker when it discarded the message
        assert redis_client.llen(queue) == 0
        assert redis_client.get(key) is None, "the revoked task ran"
        assert task_id in inspect(ctl_app, late).revoked()[late.name]
    finally:
        stopped_cleanly(late)


def test_shutdown_command_stops_the_worker(redis_url, ctl_app):
    worker = start_worker(redis_url, "bye")
    assert wait_for(lambda: ctl_app.control.ping(destination=[worker.name], timeout=0.5), 10), worker.log()
    # `shutdown` gets no reply, as from Celery: the CLI says "No nodes replied".
    assert ctl_app.control.broadcast("shutdown", destination=[worker.name], reply=True, timeout=1) == []
    try:
        assert wait_for(lambda: worker.proc.poll() is not None, 30), worker.log()
        assert worker.proc.returncode == 0, worker.log()
    finally:
        worker.kill()


@pytest.mark.swift_only
def test_global_rate_limit_across_three_workers(redis_url, redis_client):
    """tasks.throttled is limited to 20/s across every worker: three workers together stay within 10 % of it."""
    from swift_tasks import make_app

    queue = unique("interop-throttled")
    workers = [start_worker(redis_url, f"rl{n}", queue=queue, concurrency=8, flags=["--result-extended"])
               for n in range(3)]
    app = make_app("interop-throttled", broker=redis_url, backend=redis_url, queue=queue)
    key = unique("throttled")
    try:
        count = 100  # 5 s at 20/s
        results = [app.tasks["tasks.throttled"].delay(key) for _ in range(count)]
        for r in results:
            r.get(timeout=30)
        starts = sorted(float(x) for x in redis_client.lrange(key, 0, -1))
        assert len(starts) == count
        elapsed = starts[-1] - starts[0]
        rate = (count - 1) / elapsed
        busiest = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
        # Each worker prefetches at most 32 of the 100 messages, so all three must have run some.
        ran_on = {meta(redis_client, r.id)["worker"] for r in results}
        print(f"global limit 20/s, 3 workers: {count} tasks in {elapsed:.2f} s = {rate:.2f}/s, "
              f"busiest 1 s window {busiest}")
        assert ran_on == {w.name for w in workers}
        assert 18.0 <= rate <= 22.0, starts
        assert busiest <= 22, starts
    finally:
        app.close()
        for w in workers:
            stopped_cleanly(w)


@pytest.mark.swift_only
def test_enable_events_through_control_turns_task_events_on(ctl_app, ctl_worker):
    """The worker runs without -E: `control enable_events` turns task events on, `disable_events` off again."""
    from test_events import EventRecorder

    recorder = EventRecorder(ctl_app).start()
    name, d = ctl_worker.name, [ctl_worker.name]
    try:
        add = ctl_app.tasks["tasks.add"]
        quiet = add.delay(1, 2)
        assert quiet.get(timeout=RESULT_TIMEOUT) == 3
        # Events leave the worker in order: a heartbeat sent after the result means no task event is still coming.
        seen = len(recorder.types)
        assert wait_for(lambda: "worker-heartbeat" in recorder.types[seen:], 10)
        assert quiet.id not in recorder.state.tasks

        assert ctl_app.control.enable_events(destination=d, reply=True) == [{name: {"ok": "task events enabled"}}]
        loud = add.delay(2, 3)
        assert loud.get(timeout=RESULT_TIMEOUT) == 5
        assert wait_for(lambda: loud.id in recorder.state.tasks and recorder.state.tasks[loud.id].state == "SUCCESS",
                        10), recorder.types[-20:]
        assert recorder.state.tasks[loud.id].worker.hostname == name
    finally:
        assert ctl_app.control.disable_events(destination=d, reply=True) == [{name: {"ok": "task events disabled"}}]
        recorder.stop()


@pytest.mark.swift_only
def test_a_revoked_chord_header_task_ends_the_chord_with_chord_error(ctl_app, ctl_worker):
    from celery import chord
    from celery.exceptions import ChordError

    add, xsum = ctl_app.tasks["tasks.add"], ctl_app.tasks["tasks.xsum"]
    revoked_id = str(uuid.uuid4())
    reply = ctl_app.control.revoke(revoked_id, destination=[ctl_worker.name], reply=True)
    assert reply[0][ctl_worker.name]["ok"] == f"tasks {{'{revoked_id}'}} flagged as revoked", reply
    header = [add.s(1, 1), add.s(2, 2).set(task_id=revoked_id), add.s(3, 3)]
    result = chord(header, xsum.s()).apply_async()
    body = ctl_app.AsyncResult(result.id)
    with pytest.raises(ChordError) as info:
        body.get(timeout=RESULT_TIMEOUT, propagate=True)
    assert revoked_id in str(info.value) and "TaskRevokedError" in str(info.value), str(info.value)
    assert ctl_app.AsyncResult(revoked_id).state == "REVOKED"
