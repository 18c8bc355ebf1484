"""A Python Celery 5.7 app drives the worker under test through send_task and the swift_tasks stubs."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from celery import chain
from celery.exceptions import NotRegistered
from conftest import RESULT_TIMEOUT
from interop_helpers import encode, envelope, wait_for

T = RESULT_TIMEOUT


def meta_key(task_id: str) -> str:
    return f"celery-task-meta-{task_id}"


# --- sending: send_task and the stubs ---------------------------------------------------------------------------


def test_send_task_by_name(app, worker):
    result = app.send_task("tasks.add", args=(2, 3), queue=worker.queue)
    assert result.get(timeout=T) == 5
    assert result.state == "SUCCESS"


def test_send_task_is_routed_by_task_routes(app):
    # no queue= : the app's task_routes send tasks.* to the worker's queue
    assert app.send_task("tasks.mul", args=(6, 7)).get(timeout=T) == 42


def test_stubs_delay_and_apply_async(tasks):
    assert tasks.add.delay(2, 3).get(timeout=T) == 5
    assert tasks.mul.apply_async((7, 6)).get(timeout=T) == 42
    assert tasks.xsum.delay([1, 2, 3, 4.5]).get(timeout=T) == 10.5


def test_kwargs_call(tasks):
    assert tasks.add.apply_async(kwargs={"x": 1, "y": 2}).get(timeout=T) == 3
    assert tasks.add.apply_async((10,), {"y": 5}).get(timeout=T) == 15


def test_echo_args_and_kwargs(tasks):
    result = tasks.echo.delay(1, "two", [3], k="v", n=None, nested={"a": [1, {"b": True}]})
    assert result.get(timeout=T) == {
        "args": [1, "two", [3]],
        "kwargs": {"k": "v", "n": None, "nested": {"a": [1, {"b": True}]}},
    }
    assert tasks.echo.delay().get(timeout=T) == {"args": [], "kwargs": {}}


def test_cpu(tasks):
    assert tasks.cpu.delay(100).get(timeout=T) == 25
    assert tasks.cpu.delay(100_000).get(timeout=T) == 9592
    assert tasks.cpu.delay(2).get(timeout=T) == 0


def test_chain(tasks, worker):
    # each hop names its queue in options, so the worker publishes it back to the queue it consumes
    q = worker.queue
    result = chain(tasks.add.s(1, 2).set(queue=q), tasks.add.s(3).set(queue=q), tasks.mul.s(10).set(queue=q)).apply_async()
    assert result.get(timeout=T) == 60
    assert result.parent.get(timeout=T) == 6
    assert result.parent.parent.get(timeout=T) == 3


def test_link(tasks, worker):
    # link=: after success the worker publishes the callback with the result prepended, and records it as a child
    q = worker.queue
    child_id, fixed_id = str(uuid.uuid4()), str(uuid.uuid4())
    result = tasks.add.apply_async((2, 3), link=tasks.add.s(10).set(queue=q, task_id=child_id))
    assert result.get(timeout=T) == 5
    assert tasks.add.AsyncResult(child_id).get(timeout=T) == 15
    assert [child.id for child in result.children] == [child_id]
    # immutable (.si): the result is not prepended
    fixed = tasks.add.apply_async((1, 1), link=tasks.identity.si("fixed").set(queue=q, task_id=fixed_id))
    assert fixed.get(timeout=T) == 2
    assert tasks.identity.AsyncResult(fixed_id).get(timeout=T) == "fixed"


def test_link_error(tasks, worker):
    # link_error=: after failure the errbacks run with the failed task's id (or their own args when immutable)
    q = worker.queue
    errback_id, fixed_id = str(uuid.uuid4()), str(uuid.uuid4())
    result = tasks.fail.apply_async(
        ("linked",),
        link_error=[
            tasks.identity.s().set(queue=q, task_id=errback_id),
            tasks.identity.si("fixed").set(queue=q, task_id=fixed_id),
        ],
    )
    with pytest.raises(Exception, match="linked"):
        result.get(timeout=T)
    assert tasks.identity.AsyncResult(errback_id).get(timeout=T) == result.id
    assert tasks.identity.AsyncResult(fixed_id).get(timeout=T) == "fixed"


def test_many_concurrent_tasks(tasks):
    results = [tasks.add.delay(i, i) for i in range(200)]
    assert [r.get(timeout=T) for r in results] == [2 * i for i in range(200)]


# --- values round-trip exactly -----------------------------------------------------------------------------------

VALUES = [
    pytest.param(0, id="zero"),
    pytest.param(-17, id="negative"),
    pytest.param(2**63 - 1, id="int64-max"),
    pytest.param(-(2**63), id="int64-min"),
    pytest.param(2**53 + 1, id="beyond-double-precision"),
    pytest.param(0.1, id="float"),
    pytest.param(-2.5e-300, id="float-tiny"),
    pytest.param(1.7976931348623157e308, id="float-max"),
    pytest.param(1.0, id="float-integral"),
    pytest.param("", id="empty-string"),
    pytest.param("hello, world", id="ascii"),
    pytest.param("quote \" backslash \\ slash / nul \x00 nl \n tab \t bell \x07", id="escapes"),
    pytest.param("emoji 🎉👩‍👩‍👧‍👦🇯🇵", id="emoji"),
    pytest.param("中文字符 日本語 한국어", id="cjk"),
    pytest.param("e\u0301 vs \u00e9, a\u030a\u0323", id="combining-not-normalized"),
    pytest.param("\ud7ff\ue000\uffff\U0010ffff", id="edge-code-points"),
    pytest.param(None, id="none"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param([], id="empty-list"),
    pytest.param({}, id="empty-dict"),
    pytest.param([1, [2, [3, [4, [5, []]]]], "x", None, 1.5, True], id="nested-list"),
    pytest.param({"a": {"b": {"c": [1, {"d": None}]}}, "ключ": "значение", "": 0, "🎉": [True]}, id="nested-dict"),
]


@pytest.mark.parametrize("value", VALUES)
def test_identity_round_trip(tasks, value):
    result = tasks.identity.delay(value).get(timeout=T)
    assert result == value
    assert type(result) is type(value)
    if isinstance(value, float):
        assert repr(result) == repr(value)


def test_float_arithmetic(tasks):
    assert tasks.add.delay(0.1, 0.2).get(timeout=T) == 0.1 + 0.2  # 0.30000000000000004, shortest round-trip
    assert tasks.mul.delay(1.5, 4).get(timeout=T) == 6.0
    assert tasks.add.delay(2**62, 2**62 - 1).get(timeout=T) == 2**63 - 1


def test_large_argument(tasks):
    value = "x" * (10 * 1024 * 1024 - 7) + "🎉中e\u0301"
    result = tasks.identity.apply_async((value,)).get(timeout=60)
    assert len(result) == len(value)
    assert result == value


# --- errors ------------------------------------------------------------------------------------------------------


def test_value_error_is_rebuilt(tasks):
    result = tasks.fail.delay("bad thing: ünïcode ✓")
    with pytest.raises(ValueError) as info:
        result.get(timeout=T)
    assert type(info.value) is ValueError
    assert info.value.args == ("bad thing: ünïcode ✓",)
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert isinstance(result.traceback, str) and result.traceback


def test_failure_meta_layout(app, tasks, redis_client):
    result = tasks.fail.delay("layout")
    with pytest.raises(ValueError):
        result.get(timeout=T)
    meta = json.loads(redis_client.get(meta_key(result.id)))
    assert meta["status"] == "FAILURE"
    assert meta["result"] == {"exc_type": "ValueError", "exc_message": ["layout"], "exc_module": "builtins"}
    assert meta["task_id"] == result.id
    assert meta["date_done"]


def test_wrong_argument_type_is_type_error(tasks):
    # Python: "a" + 1 raises TypeError; the Swift worker must store FAILURE TypeError for a decode mismatch too.
    with pytest.raises(TypeError):
        tasks.add.delay("a", 1).get(timeout=T)
    with pytest.raises(TypeError):
        tasks.xsum.delay(None).get(timeout=T)


def test_wrong_argument_count_is_type_error(app, worker):
    with pytest.raises(TypeError):
        app.send_task("tasks.add", args=(1,), queue=worker.queue).get(timeout=T)
    with pytest.raises(TypeError):
        app.send_task("tasks.add", args=(1, 2, 3), queue=worker.queue).get(timeout=T)


def test_unknown_task_is_not_registered(app, worker, redis_client):
    name = f"tasks.no_such_task_{uuid.uuid4().hex[:6]}"
    result = app.send_task(name, args=(1,), queue=worker.queue)
    with pytest.raises(NotRegistered) as info:
        result.get(timeout=T)
    assert name in str(info.value)
    assert result.state == "FAILURE"
    # rejected for good: not left on the queue
    assert redis_client.llen(worker.queue) == 0


# --- waiting and states ------------------------------------------------------------------------------------------


def test_get_waits_for_a_result_that_arrives_later(tasks):
    started = time.monotonic()
    result = tasks.sleep.delay(1)
    assert not result.ready()  # get() below starts before the result exists
    assert result.get(timeout=T) == 1
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < T


def test_state_pending_then_success(app, tasks):
    assert app.AsyncResult(str(uuid.uuid4())).state == "PENDING"
    result = tasks.sleep.delay(0.5)
    assert result.state == "PENDING"  # no --track-started: PENDING until done
    assert result.get(timeout=T) == 0.5
    assert app.AsyncResult(result.id).state == "SUCCESS"


def test_track_started(app, extended_worker):
    result = app.send_task("tasks.sleep", args=(2,), queue=extended_worker.queue)
    assert wait_for(lambda: app.AsyncResult(result.id).state == "STARTED", 1.8, 0.02), "never saw STARTED"
    assert result.get(timeout=T) == 2
    assert app.AsyncResult(result.id).state == "SUCCESS"


def test_result_extended(app, extended_worker):
    result = app.send_task("tasks.add", args=(2, 3), queue=extended_worker.queue)
    assert result.get(timeout=T) == 5
    meta = app.backend.get_task_meta(result.id)
    assert meta["status"] == "SUCCESS"
    assert meta["name"] == "tasks.add"
    assert meta["args"] == [2, 3]
    assert meta["kwargs"] == {}
    assert meta["queue"] == extended_worker.queue
    assert meta["worker"] == extended_worker.name
    assert meta["retries"] == 0
    fresh = app.AsyncResult(result.id)
    assert fresh.name == "tasks.add"
    assert fresh.args == [2, 3]
    assert fresh.kwargs == {}
    assert fresh.queue == extended_worker.queue

    result = app.send_task("tasks.echo", args=(1,), kwargs={"k": "v"}, queue=extended_worker.queue)
    assert result.get(timeout=T) == {"args": [1], "kwargs": {"k": "v"}}
    meta = app.backend.get_task_meta(result.id)
    assert (meta["name"], meta["args"], meta["kwargs"]) == ("tasks.echo", [1], {"k": "v"})


def test_ignore_result_stores_nothing(app, tasks, worker, redis_client):
    task_id = str(uuid.uuid4())
    tasks.add.apply_async((1, 2), task_id=task_id, ignore_result=True)
    # a task sent afterwards on the same FIFO queue completes, so the first one was consumed before it
    assert tasks.add.delay(3, 4).get(timeout=T) == 7
    time.sleep(0.5)
    assert redis_client.llen(worker.queue) == 0, "the ignore_result task is still queued"
    unacked = [json.loads(v) for v in redis_client.hvals("unacked")]
    assert not [e for e in unacked if e[0]["headers"]["id"] == task_id], "the ignore_result task was never acked"
    assert redis_client.exists(meta_key(task_id)) == 0
    assert app.AsyncResult(task_id).state == "PENDING"


def test_ignore_result_on_send_task(app, worker, redis_client):
    result = app.send_task("tasks.add", args=(1, 1), queue=worker.queue, ignore_result=True)
    assert app.send_task("tasks.add", args=(2, 2), queue=worker.queue).get(timeout=T) == 4
    time.sleep(0.5)
    assert redis_client.exists(meta_key(result.id)) == 0


def test_result_ttl_default_one_day(tasks, redis_client):
    result = tasks.add.delay(1, 2)
    assert result.get(timeout=T) == 3
    ttl = redis_client.ttl(meta_key(result.id))
    assert 86000 < ttl <= 86400


# --- two workers, one Redis --------------------------------------------------------------------------------------


def test_python_and_worker_under_test_side_by_side(app, worker, python_worker, extended_worker):
    to_test = [app.send_task("tasks.add", args=(i, 1), queue=extended_worker.queue) for i in range(20)]
    to_python = [app.send_task("tasks.add", args=(i, 2), queue=python_worker.queue) for i in range(20)]
    to_main = [app.send_task("tasks.mul", args=(i, 3), queue=worker.queue) for i in range(20)]
    assert [r.get(timeout=T) for r in to_test] == [i + 1 for i in range(20)]
    assert [r.get(timeout=T) for r in to_python] == [i + 2 for i in range(20)]
    assert [r.get(timeout=T) for r in to_main] == [i * 3 for i in range(20)]
    # each queue was served by its own worker (both store result_extended meta)
    assert {app.backend.get_task_meta(r.id)["worker"] for r in to_test} == {extended_worker.name}
    assert {app.backend.get_task_meta(r.id)["worker"] for r in to_python} == {python_worker.name}


# --- the hand-built envelope (used by test_bad_input) is what kombu sends ------------------------------------------


def test_envelope_helper_matches_kombu(app, redis_client):
    queue = f"interop-capture-{uuid.uuid4().hex[:8]}"
    try:
        sent = app.send_task("tasks.add", args=(2, 3), queue=queue)
        raw = redis_client.lindex(queue, 0)
        assert raw is not None
        captured = json.loads(raw)
        ours = envelope("tasks.add", (2, 3), task_id=sent.id, queue=queue)
        assert list(captured) == list(ours)
        assert list(captured["headers"]) == list(ours["headers"])
        assert list(captured["properties"]) == list(ours["properties"])
        assert captured["body"] == ours["body"]
        for key in ("task", "id", "root_id", "retries", "timelimit", "argsrepr", "kwargsrepr", "ignore_result"):
            assert captured["headers"][key] == ours["headers"][key], key
        for key in ("correlation_id", "delivery_mode", "delivery_info", "priority", "body_encoding"):
            assert captured["properties"][key] == ours["properties"][key], key
        assert captured["content-type"] == ours["content-type"]
        assert captured["content-encoding"] == ours["content-encoding"]
    finally:
        redis_client.delete(queue)


def test_raw_envelope_runs(app, worker, redis_client):
    env = envelope("tasks.add", (20, 22), queue=worker.queue)
    result = app.AsyncResult(env["headers"]["id"])
    redis_client.lpush(worker.queue, encode(env))
    assert wait_for(lambda: result.ready(), T)
    assert result.get(timeout=T) == 42
