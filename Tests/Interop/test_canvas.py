"""Python Celery 5.7 canvas (chains, groups, chords) executed by the worker under test."""

from __future__ import annotations

import json
import uuid

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError
from conftest import RESULT_TIMEOUT
from interop_helpers import wait_for

T = RESULT_TIMEOUT


def test_chain_of_three(tasks):
    result = chain(tasks.add.s(1, 2), tasks.add.s(3), tasks.mul.s(10)).apply_async()
    assert result.get(timeout=T) == 60
    assert result.parent.get(timeout=T) == 6
    assert result.parent.parent.get(timeout=T) == 3
    # parent and root ids recorded on each hop, children on each parent
    assert result.parent.children[0].id == result.id
    assert result.parent.parent.children[0].id == result.parent.id


def test_group_of_100_in_order(tasks):
    result = group(tasks.add.s(i, i) for i in range(100)).apply_async()
    assert result.get(timeout=T) == [2 * i for i in range(100)]
    meta = tasks.add.backend.get_task_meta(result.results[0].id)
    assert meta["group_id"] == result.id


def test_chord_of_50(tasks):
    result = chord((tasks.add.s(i, i) for i in range(50)), tasks.xsum.s()).apply_async()
    assert result.get(timeout=T) == sum(2 * i for i in range(50))


def test_chord_results_in_header_order(tasks):
    # later header tasks finish first; the body still gets the results in header order
    result = chord([tasks.sleep.s(0.3), tasks.sleep.s(0.2), tasks.sleep.s(0.1), tasks.sleep.s(0)], tasks.echo.s()).apply_async()
    assert result.get(timeout=T) == {"args": [[0.3, 0.2, 0.1, 0]], "kwargs": {}}


def test_chord_with_a_failing_header_stores_chord_error(app, tasks, redis_client):
    header = [tasks.add.s(1, 1), tasks.fail.s("header broke"), tasks.add.s(2, 2)]
    result = chord(header, tasks.xsum.s()).apply_async()
    # the body's own result is the ChordError (get() on the chord result re-raises the header's error first)
    body = app.AsyncResult(result.id)
    with pytest.raises(ChordError) as info:
        body.get(timeout=T, propagate=True)
    failed_id = result.parent.results[1].id
    assert str(info.value) == f"Dependency {failed_id} raised ValueError('header broke')"
    assert body.state == "FAILURE"
    with pytest.raises((ChordError, ValueError)):
        result.get(timeout=T)
    # the body never ran, and the chord size is gone (a late duplicate cannot fail it again)
    assert redis_client.exists(f"celery-taskset-meta-{result.parent.id}.s") == 0


def test_chord_body_errback_gets_the_body_id(app, tasks):
    errback_id = str(uuid.uuid4())
    body = tasks.xsum.s().on_error(tasks.identity.s().set(task_id=errback_id))
    result = chord([tasks.fail.s("x"), tasks.add.s(1, 1)], body).apply_async()
    assert tasks.identity.AsyncResult(errback_id).get(timeout=T) == result.id


def test_link_error_on_a_header_task(tasks):
    errback_id = str(uuid.uuid4())
    header = [tasks.fail.s("linked").on_error(tasks.identity.s().set(task_id=errback_id)), tasks.add.s(1, 1)]
    result = chord(header, tasks.xsum.s()).apply_async()
    failed_id = result.parent.results[0].id
    assert tasks.identity.AsyncResult(errback_id).get(timeout=T) == failed_id


def test_several_link_callbacks_are_one_group(tasks):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    result = tasks.add.apply_async((1, 2), link=[tasks.identity.s().set(task_id=first),
                                                 tasks.identity.s().set(task_id=second)])
    assert result.get(timeout=T) == 3
    assert tasks.identity.AsyncResult(first).get(timeout=T) == 3
    assert tasks.identity.AsyncResult(second).get(timeout=T) == 3
    children = result.children
    assert len(children) == 1 and [r.id for r in children[0].results] == [first, second]


def test_chain_after_a_failure_fails_the_rest(tasks):
    result = chain(tasks.fail.s("early"), tasks.add.s(1), tasks.mul.s(2)).apply_async()
    with pytest.raises(ValueError, match="early"):
        result.get(timeout=T)
    assert result.state == "FAILURE"


@pytest.mark.parametrize("round_", range(3))
def test_chord_header_half_on_a_python_worker(app, tasks, worker, python_worker, round_):
    # even members on the worker under test, odd ones on the Python reference worker; whichever finishes the
    # last header task claims the chord and sends the body (to the worker under test's queue)
    header = [tasks.add.s(i, i).set(queue=worker.queue if i % 2 == 0 else python_worker.queue) for i in range(20)]
    result = chord(header, tasks.xsum.s().set(queue=worker.queue)).apply_async()
    assert result.get(timeout=T) == sum(2 * i for i in range(20))
    workers = {app.backend.get_task_meta(r.id).get("worker") for r in result.parent.results}
    assert python_worker.name in workers  # the Python worker (result_extended) really ran its half


def test_chord_part_keys_follow_celery_layout(app, tasks, redis_client):
    # after the body was sent the chord's keys are gone and the claim says "done"
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.xsum.s()).apply_async()
    assert result.get(timeout=T) == 6
    gid = result.parent.id
    assert wait_for(lambda: redis_client.get(f"celery-taskset-meta-{gid}.c") == b"done", T)
    for suffix in (".j", ".s", ".d"):
        assert redis_client.exists(f"celery-taskset-meta-{gid}{suffix}") == 0
    body_meta = json.loads(redis_client.get(f"celery-task-meta-{result.id}"))
    assert body_meta["group_id"] == gid
    assert body_meta["parent_id"] in {r.id for r in result.parent.results}


# --- nested canvas: groups and chords as chain steps, callbacks and chord bodies ---------------------------------


def test_chain_through_a_group_into_a_task(tasks):
    # the group followed by a task becomes a chord inside the chain
    result = chain(tasks.add.s(1, 2), group(tasks.add.s(1), tasks.mul.s(2)), tasks.xsum.s()).apply_async()
    assert result.get(timeout=T) == (3 + 1) + (3 * 2)


def test_chain_ending_in_a_group(tasks):
    result = chain(tasks.add.s(1, 2), group(tasks.add.s(1), tasks.mul.s(2))).apply_async()
    assert result.get(timeout=T) == [4, 6]


def test_chain_through_a_chord_and_on(tasks):
    result = chain(tasks.add.s(1, 2), chord([tasks.add.s(1), tasks.add.s(2)], tasks.xsum.s()),
                   tasks.mul.s(10)).apply_async()
    assert result.get(timeout=T) == ((3 + 1) + (3 + 2)) * 10


def test_chord_body_is_a_chain(tasks):
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], chain(tasks.xsum.s(), tasks.mul.s(3))).apply_async()
    assert result.get(timeout=T) == (2 + 4) * 3


def test_link_to_a_group(tasks):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    callback = group(tasks.identity.s().set(task_id=first), tasks.add.s(10).set(task_id=second))
    result = tasks.add.apply_async((1, 2), link=callback)
    assert result.get(timeout=T) == 3
    assert tasks.identity.AsyncResult(first).get(timeout=T) == 3
    assert tasks.add.AsyncResult(second).get(timeout=T) == 13


def test_chains_inside_a_group_a_chain_step_sends(tasks):
    """A group member that is a chain (Celery's test_chain_inside_group_receives_arguments): the worker sends the
    chain's first task with the previous result; its last task gives the member's result."""
    result = chain(tasks.add.s(1, 2), group(chain(tasks.add.s(10), tasks.mul.s(2)), tasks.add.s(100))).delay()
    assert result.get(timeout=RESULT_TIMEOUT) == [26, 103]


def test_chains_inside_a_chord_header_a_chain_step_sends(tasks):
    """The same inside a chord header: the chain's last task returns the chord part."""
    header = group(chain(tasks.add.s(1), tasks.mul.s(10)), chain(tasks.add.s(2), tasks.add.s(3), tasks.mul.s(2)))
    result = chain(tasks.add.s(0, 1), chord(header, tasks.xsum.s())).delay()
    assert result.get(timeout=RESULT_TIMEOUT) == 20 + 12


def test_a_group_followed_by_steps_in_a_chain_the_worker_sends_becomes_a_chord(tasks):
    """Celery's chain upgrades `group | task` to a chord: here the group comes after a first step, so the worker
    sends it, and the steps after the group get its list of results."""
    result = chain(
        tasks.add.s(1, 1), group(tasks.add.s(1), tasks.add.s(2)), tasks.xsum.s(), tasks.add.s(100)
    ).delay()
    assert result.get(timeout=RESULT_TIMEOUT) == 3 + 4 + 100


def test_link_error_on_a_chain_body_runs_for_the_step_that_fails(tasks, redis_client):
    """`chord.link_error(eb)` puts the errback on its body; a chain body's own link_error goes on every step of the
    chain (Celery's chain.run), so the step that fails calls it with its id."""
    key = f"chain-errback-{uuid.uuid4()}"
    failing = tasks.fail.s()
    failing_id = failing.freeze().id
    body = chain(tasks.identity.si(42), failing, tasks.identity.si(42))
    signature = chord([tasks.identity.si(1)], body)
    signature.link_error(tasks.redis_echo.s(redis_key=key))
    with pytest.raises(Exception):
        signature.delay().get(timeout=RESULT_TIMEOUT)
    assert wait_for(lambda: redis_client.lrange(key, 0, -1), RESULT_TIMEOUT)
    assert [item.decode() for item in redis_client.lrange(key, 0, -1)] == [failing_id]
    redis_client.delete(key)


def test_a_failed_chord_fails_the_chain_after_its_body(tasks):
    """Celery's chord_error_from_stack fails the chain after a failed chord's body too, so a group waiting on the
    chain's last result finishes (Celery's test_header_failure_fails_the_chords_after_it)."""
    inner = chain(
        chord([tasks.add.s(1, 1), tasks.fail.s("boom")], tasks.xsum.s()),
        chord([tasks.add.s(1), tasks.add.s(2)], tasks.xsum.s()),
    )
    result = group(inner, tasks.add.s(1, 1)).delay()
    with pytest.raises(Exception):
        result.get(timeout=RESULT_TIMEOUT)
    assert result.results[0].state == "FAILURE"


def test_a_failed_chord_fails_each_task_of_a_group_body_and_calls_its_errbacks(tasks, redis_client):
    key = f"group-body-errbacks-{uuid.uuid4()}"
    body = group(tasks.add.s(1), tasks.add.s(2))
    body.link_error(tasks.redis_echo.s(redis_key=key))  # on each task of the group
    result = chord([tasks.fail.s("boom")], body).delay()
    with pytest.raises(Exception):
        result.get(timeout=RESULT_TIMEOUT)
    assert wait_for(lambda: redis_client.llen(key) == 2, RESULT_TIMEOUT)
    assert sorted(item.decode() for item in redis_client.lrange(key, 0, -1)) == sorted(r.id for r in result.results)
    redis_client.delete(key)


def test_link_on_a_chain_ending_in_a_chord_runs_after_the_body(tasks, redis_client):
    """`chain(..., chord(...)).apply_async(link=cb)`: the link lands on the chord, which gives it to its body."""
    key = f"chord-link-{uuid.uuid4()}"
    workflow = chain(tasks.add.si(1, 1), chord([tasks.add.s(10), tasks.add.s(20)], tasks.xsum.s()))
    result = workflow.apply_async(link=tasks.redis_echo.s(redis_key=key))
    assert result.get(timeout=RESULT_TIMEOUT) == 34
    assert wait_for(lambda: redis_client.lrange(key, 0, -1), RESULT_TIMEOUT)
    assert [item.decode() for item in redis_client.lrange(key, 0, -1)] == ["34"]
    redis_client.delete(key)


def test_a_frozen_chord_applied_again_runs_its_body_each_time(tasks, redis_client):
    # Celery's client sends the first header task before it resets the chord of the last run (set_chord_size comes
    # before the last header task), so a fast worker can meet the last run's `done` marker first.
    key = f"frozen-{uuid.uuid4()}"
    workflow = chord(group(tasks.add.s(1, 2), tasks.add.s(3, 4)), tasks.incr.si(key))
    workflow.freeze()
    for run in range(1, 11):
        workflow.apply_async()
        assert wait_for(lambda: int(redis_client.get(key) or 0) >= run, T), f"run {run} did not run its body"
    assert int(redis_client.get(key)) == 10
    redis_client.delete(key)
