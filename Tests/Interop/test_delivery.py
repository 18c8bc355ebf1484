"""Delivery across workers on one Redis: kombu's visibility-timeout restore in both directions."""

import time

import pytest

from conftest import WorkerProcess, _start, stopped_cleanly, unique
from swift_tasks import make_app

pytestmark = pytest.mark.swift_only
T = 30


def test_python_restore_does_not_take_what_the_swift_worker_holds(redis_url, redis_client):
    """A countdown task held by a live Swift worker for longer than the visibility timeout is not redelivered by a
    Python worker's restore (kombu's own workers redeliver it and run it twice): it runs exactly once."""
    swift = _start("swift", redis_url, "vt-swift", flags=["--visibility-timeout=2"])
    python = None
    try:
        app = make_app("vt-client", broker=redis_url, backend=redis_url, queue=swift.queue)
        key = unique("vt-count")
        result = app.tasks["tasks.incr"].apply_async((key,), countdown=6)
        time.sleep(3.5)  # held 1.75 visibility timeouts by now
        # A Python worker restores everything in unacked older than its visibility timeout when it starts.
        python = _start("python", redis_url, "vt-python", flags=["--visibility-timeout=2"])
        time.sleep(1)
        assert redis_client.llen(swift.queue) == 0, "the held message was put back on the queue"
        assert result.get(timeout=T) == 1
        time.sleep(2)
        assert int(redis_client.get(key)) == 1
    finally:
        if python is not None:
            stopped_cleanly(python)
        stopped_cleanly(swift)


def test_swift_worker_restores_what_a_killed_python_worker_prefetched(redis_url, redis_client):
    """kill -9 a Python worker holding prefetched messages: a Swift worker on the same queue gives them back after
    the visibility timeout and runs them."""
    queue = unique("interop-dead")
    python = WorkerProcess("python", redis_url, queue=queue, name=f"{unique('dead')}@localhost", concurrency=1).start()
    app = make_app("dead-client", broker=redis_url, backend=redis_url, queue=queue)
    blocker = app.tasks["tasks.sleep"].delay(30)
    waiting = [app.tasks["tasks.add"].delay(i, 1) for i in range(3)]
    deadline = time.time() + T
    while redis_client.llen(queue) > 0 and time.time() < deadline:
        time.sleep(0.05)
    assert redis_client.llen(queue) == 0, "the Python worker did not prefetch"

    # Killed only once Python has acked the running task (early ack, when its pool takes it): before that the
    # blocker is still in `unacked` and is rightly restored too, and the Swift worker would then run a 30 s task.
    def in_unacked(task_id: str) -> bool:
        return any(task_id.encode() in value for value in redis_client.hvals("unacked"))

    while in_unacked(blocker.id) and time.time() < deadline:
        time.sleep(0.05)
    assert not in_unacked(blocker.id), "the Python worker did not start (and ack) the blocking task"
    assert all(in_unacked(r.id) for r in waiting), "the prefetched tasks are not in unacked"
    python.kill()
    swift = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('rescue')}@localhost",
                          flags=["--visibility-timeout=2"]).start()
    try:
        assert [r.get(timeout=T) for r in waiting] == [1, 2, 3]
        # The running task was acked early by Python (Celery's default), so it is gone, as in Celery.
        assert blocker.state == "PENDING"
    finally:
        stopped_cleanly(swift)


def test_retry_through_a_flaky_task(tasks):
    """`tasks.flaky(3)` retries itself three times (new message, same id, retries + 1, eta) and then succeeds."""
    result = tasks.flaky.delay(3)
    assert result.get(timeout=T) == 3
    assert result.state == "SUCCESS"


def test_countdown_eta_and_priority_options(tasks, worker):
    from datetime import datetime, timedelta, timezone

    started = time.time()
    assert tasks.add.apply_async((1, 1), countdown=1).get(timeout=T) == 2
    assert time.time() - started >= 1.0
    eta = datetime.now(timezone.utc) + timedelta(seconds=1)
    assert tasks.add.apply_async((2, 2), eta=eta).get(timeout=T) == 4
    assert datetime.now(timezone.utc) >= eta
    assert tasks.add.apply_async((3, 3), priority=9).get(timeout=T) == 6
    assert tasks.add.apply_async((4, 4), expires=60).get(timeout=T) == 8
    assert tasks.add.apply_async((5, 5), queue=worker.queue).get(timeout=T) == 10


def test_expired_before_it_ran_is_revoked(tasks):
    from datetime import datetime, timedelta, timezone

    from celery.exceptions import TaskRevokedError

    with pytest.raises(TaskRevokedError):
        tasks.add.apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=5)).get(timeout=T)
    # Expires while it waits for its ETA: checked again before running.
    with pytest.raises(TaskRevokedError):
        tasks.add.apply_async((1, 1), countdown=2, expires=1).get(timeout=T)


def test_time_limits_from_apply_async(tasks):
    from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

    started = time.time()
    with pytest.raises(SoftTimeLimitExceeded):
        tasks.sleep.apply_async((30,), soft_time_limit=0.5).get(timeout=T)
    with pytest.raises(TimeLimitExceeded):
        tasks.sleep.apply_async((30,), time_limit=0.5).get(timeout=T)
    assert time.time() - started < 10
    # A limit the task stays inside changes nothing.
    assert tasks.sleep.apply_async((0.1,), time_limit=5, soft_time_limit=4).get(timeout=T) == 0.1
