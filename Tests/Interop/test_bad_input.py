"""Hostile envelopes LPUSHed straight onto the worker's queue (redis-py, no kombu): the worker must survive each one,
must not keep it around, and must still run the valid task sent right after it.

Python's worker does not survive several of these (docs/protocol.md §1.1, §2.3: a missing delivery_tag loses the broker
connection and the message, a 2-element body is an unrecoverable error and a poison message; checked here: a body that
is not base64 ("***") is an unrecoverable TypeError, a message without headers.id makes the consumer reconnect in a
loop on KeyError('id')); those cases are swift_only: the expectations are the Swift worker's spec. Python refuses a
pickle message without storing anything; the Swift worker is specified to store FAILURE ContentDisallowed (swift_only).
"""

from __future__ import annotations

import base64
import json
import pickle
import time

import pytest
from conftest import RESULT_TIMEOUT, _start, stopped_cleanly, worker_kind
from interop_helpers import EMBED, encode, envelope, wait_for

T = RESULT_TIMEOUT


@pytest.fixture(scope="module")
def hostile_worker(redis_url):
    """A worker of its own, so a crash here cannot take the other tests down."""
    w = _start(worker_kind(), redis_url, "hostile")
    yield w
    stopped_cleanly(w)


@pytest.fixture(scope="module")
def hostile_app(redis_url, hostile_worker):
    from swift_tasks import make_app

    celery_app = make_app("interop-hostile", broker=redis_url, backend=redis_url, queue=hostile_worker.queue)
    yield celery_app
    import gc

    gc.collect()
    celery_app.close()


def valid(queue: str) -> dict:
    return envelope("tasks.add", (2, 3), queue=queue)


def broken(queue: str, change) -> dict:
    env = valid(queue)
    change(env)
    return env


def _drop_delivery_tag(env):
    del env["properties"]["delivery_tag"]


def _body(text: bytes):
    def change(env):
        env["body"] = base64.b64encode(text).decode("ascii")

    return change


def _set_body_raw(value: str):
    def change(env):
        env["body"] = value

    return change


def _pickle(env):
    env["content-type"] = "application/x-python-serialize"
    env["content-encoding"] = "binary"
    env["body"] = base64.b64encode(pickle.dumps(((2, 3), {}, dict(EMBED)), protocol=2)).decode("ascii")


def _drop_task_id(env):
    del env["headers"]["id"]
    del env["properties"]["correlation_id"]


# (id, builder(queue) -> bytes, swift_only)
CASES = [
    pytest.param(lambda q: b"this is not json {", id="not-json", marks=pytest.mark.swift_only),
    pytest.param(lambda q: b"[1, 2, 3]", id="json-array-not-object", marks=pytest.mark.swift_only),
    pytest.param(lambda q: b"\xff\xfe\x00garbage", id="not-utf8", marks=pytest.mark.swift_only),
    pytest.param(lambda q: encode(broken(q, _drop_delivery_tag)), id="no-delivery-tag", marks=pytest.mark.swift_only),
    pytest.param(lambda q: encode(broken(q, _set_body_raw("!!! not base64 ~~~"))), id="body-not-base64",
                 marks=pytest.mark.swift_only),
    # Python: "Can't decode message body: DecodeError", message dropped, worker lives on
    pytest.param(lambda q: encode(broken(q, _body(b"\xff not json"))), id="body-not-json"),
    pytest.param(lambda q: encode(broken(q, _body(json.dumps([[2, 3], {}]).encode()))), id="two-element-body",
                 marks=pytest.mark.swift_only),
    # Python survives this one (it even ran it); the Swift worker may store a failure instead, both pass
    pytest.param(lambda q: encode(broken(q, _body(json.dumps({"args": [2, 3]}).encode()))), id="body-is-object"),
    # Python: "Received invalid task message: Refusing to deserialize untrusted content of type pickle", no result
    pytest.param(lambda q: encode(broken(q, _pickle)), id="pickle"),
    pytest.param(lambda q: encode(broken(q, _drop_task_id)), id="no-task-id", marks=pytest.mark.swift_only),
]


def _assert_still_works(app, worker, redis_client, marker_ids=()):
    result = app.send_task("tasks.add", args=(40, 2), queue=worker.queue)
    assert result.get(timeout=T) == 42, "a valid task sent after the hostile message did not complete"
    assert worker.alive(), f"worker died\n{worker.log()}"
    time.sleep(0.3)
    assert redis_client.llen(worker.queue) == 0, "the hostile message is back on the queue"


@pytest.mark.parametrize("build", CASES)
def test_hostile_envelope_then_valid_task(build, hostile_app, hostile_worker, redis_client):
    redis_client.lpush(hostile_worker.queue, build(hostile_worker.queue))
    _assert_still_works(hostile_app, hostile_worker, redis_client)


def test_several_hostile_envelopes_in_a_row(hostile_app, hostile_worker, redis_client):
    q = hostile_worker.queue
    for raw in (encode(broken(q, _body(b"\xfe"))), encode(broken(q, _pickle)), encode(valid(q))):
        redis_client.lpush(q, raw)
    _assert_still_works(hostile_app, hostile_worker, redis_client)


@pytest.mark.swift_only
def test_pickle_is_refused_with_content_disallowed(hostile_app, hostile_worker, redis_client):
    env = broken(hostile_worker.queue, _pickle)
    task_id = env["headers"]["id"]
    redis_client.lpush(hostile_worker.queue, encode(env))
    result = hostile_app.AsyncResult(task_id)
    assert wait_for(lambda: result.ready(), T), "no result stored for the pickle message"
    assert result.state == "FAILURE"
    meta = json.loads(redis_client.get(f"celery-task-meta-{task_id}"))
    assert meta["result"]["exc_type"] == "ContentDisallowed"
    assert meta["result"]["exc_module"] == "kombu.exceptions"
    with pytest.raises(Exception) as info:
        result.get(timeout=T)
    assert type(info.value).__name__ == "ContentDisallowed"
    _assert_still_works(hostile_app, hostile_worker, redis_client)


def test_pickle_never_runs(hostile_app, hostile_worker, redis_client):
    """Python and Swift alike: a pickle message is never deserialized, so it never produces SUCCESS."""
    env = broken(hostile_worker.queue, _pickle)
    task_id = env["headers"]["id"]
    redis_client.lpush(hostile_worker.queue, encode(env))
    _assert_still_works(hostile_app, hostile_worker, redis_client)
    assert hostile_app.AsyncResult(task_id).state != "SUCCESS"
