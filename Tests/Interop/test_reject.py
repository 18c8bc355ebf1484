"""Celery's Reject from a handler, with Python's AsyncResult as the reference: without requeue the task fails with
Reject and its message is gone; with requeue (acks-late) the message goes back to its queue and runs again."""

import time

import pytest
from celery.exceptions import Reject

from conftest import _start, stopped_cleanly, unique, worker_kind
from interop_helpers import wait_for
from swift_tasks import make_app

T = 30


def test_reject_without_requeue_fails_with_reject_and_does_not_come_back(tasks, redis_client, worker):
    """`Reject(reason, requeue=False)`: FAILURE with celery.exceptions.Reject, and the message is gone."""
    key = unique("reject-no-requeue")
    result = tasks.reject.delay(key, False)
    with pytest.raises(Reject):
        result.get(timeout=T)
    assert result.state == "FAILURE"
    assert (result.result.reason, result.result.requeue) == ("rejected", False)
    time.sleep(1.5)
    assert int(redis_client.get(key)) == 1
    assert redis_client.llen(worker.queue) == 0


def test_reject_with_requeue_under_acks_late_runs_again_redelivered(redis_url, redis_client):
    """`Reject(reason, requeue=True)` under acks-late: no result is stored, the message goes back to its queue
    marked redelivered, and the next attempt (which no longer rejects) succeeds."""
    worker = _start(worker_kind(), redis_url, "reject", flags=["--acks-late"])
    try:
        app = make_app("reject-client", broker=redis_url, backend=redis_url, queue=worker.queue)
        key = unique("reject-requeue")
        result = app.tasks["tasks.reject"].delay(key, True)
        assert result.get(timeout=T) == 2
        assert int(redis_client.get(key)) == 2
        app.close()
    finally:
        stopped_cleanly(worker)


def test_reject_with_requeue_under_early_ack_is_not_requeued(tasks, redis_client, worker):
    """Without acks-late the message was acked before the task ran: Reject(requeue=True) has no effect (Celery's
    documented rule), nothing is stored and the task does not run again."""
    key = unique("reject-early")
    result = tasks.reject.delay(key, True)
    deadline = time.time() + T
    while redis_client.get(key) is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    assert int(redis_client.get(key)) == 1
    assert result.state == "PENDING"
    assert redis_client.llen(worker.queue) == 0


def test_reject_events_under_acks_late(redis_url):
    """Under acks-late both rejects send task-rejected with their requeue flag; without requeue task-failed comes
    first (Celery's on_failure stores FAILURE and sends it before rejecting the message)."""
    from test_events import EventRecorder

    worker = _start(worker_kind(), redis_url, "reject-events", flags=["--acks-late", "-E"])
    app = make_app("reject-events-client", broker=redis_url, backend=redis_url, queue=worker.queue)
    seen = []
    recorder = EventRecorder(app)
    recorder._on_event = seen.append
    recorder.start()
    try:
        dropped = app.tasks["tasks.reject"].delay(unique("reject-ev"), False)
        requeued = app.tasks["tasks.reject"].delay(unique("reject-ev"), True)
        with pytest.raises(Reject):
            dropped.get(timeout=T)
        assert requeued.get(timeout=T) == 2

        def kinds(task_id):
            return [e["type"] for e in seen if e.get("uuid") == task_id and e["type"] in
                    ("task-failed", "task-rejected", "task-succeeded")]

        assert wait_for(lambda: kinds(dropped.id) == ["task-failed", "task-rejected"], 10), kinds(dropped.id)
        assert wait_for(lambda: kinds(requeued.id) == ["task-rejected", "task-succeeded"], 10), kinds(requeued.id)
        rejected = {e["uuid"]: e["requeue"] for e in seen if e["type"] == "task-rejected"}
        assert rejected == {dropped.id: False, requeued.id: True}
    finally:
        recorder.stop()
        app.close()
        stopped_cleanly(worker)


def test_a_task_with_its_own_acks_late_is_redelivered_on_an_early_ack_worker(tasks, redis_client):
    """Celery's per-task `acks_late=True` on a worker without --acks-late: the message is still unacked when the
    task rejects it with requeue, so it comes back and the second delivery succeeds."""
    key = unique("reject-late")
    assert tasks.reject_late.delay(key).get(timeout=T) == 2
    assert int(redis_client.get(key)) == 2
