"""Canvas inside canvas, driven by Python Celery 5.7 (after Celery's t/integration test_canvas): a group body's own
errbacks, a chord inside a group body, a chain of two groups, a chain ending in a group inside a chord header, a
failed chord's group body, and a canvas a task sends itself and returns."""

from __future__ import annotations

import uuid

import pytest
from celery import chain, chord, group
from celery.exceptions import ChordError
from celery.result import result_from_tuple
from conftest import RESULT_TIMEOUT
from interop_helpers import wait_for

T = RESULT_TIMEOUT


def pushed(redis_client, key):
    return sorted(item.decode() for item in redis_client.lrange(key, 0, -1))


def test_a_group_bodys_own_errback_replaces_its_tasks_and_keeps_the_chords(tasks, redis_client):
    key = f"echo-{uuid.uuid4()}"
    body = group(tasks.fail.si("body"), tasks.xsum.s()).set(link_error=tasks.redis_echo.si("group", redis_key=key))
    result = chord([tasks.add.si(1, 1)], body).apply_async(link_error=tasks.redis_echo.si("chord", redis_key=key))
    with pytest.raises(ValueError):
        result.get(timeout=T)
    assert wait_for(lambda: len(pushed(redis_client, key)) >= 2, T)
    assert pushed(redis_client, key) == ["chord", "group"]
    redis_client.delete(key)


def test_a_chord_in_the_group_body_of_a_failed_chord_fails_through_its_body(tasks, redis_client):
    key = f"echo-{uuid.uuid4()}"
    workflow = chord(
        [tasks.add.si(1, 1), tasks.fail.si("header")],
        group(chord([tasks.add.si(2, 2)], tasks.xsum.s()), tasks.xsum.s()),
    )
    result = workflow.apply_async(link_error=tasks.redis_echo.si("chord", redis_key=key))
    with pytest.raises((ValueError, ChordError)):
        result.get(timeout=T)
    # Each result of the group body (the inner chord's is its body's) calls its errback once.
    assert wait_for(lambda: len(pushed(redis_client, key)) >= 2, T)
    assert pushed(redis_client, key) == ["chord", "chord"]
    assert [r.state for r in result.results] == ["FAILURE", "FAILURE"]
    redis_client.delete(key)


def test_a_chain_of_two_groups_runs_each_task_once(tasks):
    workflow = chain(
        tasks.add.si(1, 0),
        group(tasks.add.s(1), tasks.add.s(2)),
        group(tasks.xsum.s(), tasks.xsum.s()),
        tasks.xsum.s(),
        tasks.add.s(1),
    )
    # 1 → [2, 3] → [5, 5] → 10 → 11
    assert workflow.apply_async().get(timeout=T) == 11


def test_a_chain_ending_in_a_group_inside_a_chord_header_keeps_its_shape(tasks):
    workflow = chord(
        group(chain(tasks.identity.s(42), group(tasks.identity.s(), tasks.identity.s()))),
        tasks.identity.s(),
    )
    assert workflow.delay().get(timeout=T) == [[42, 42]]


def test_a_task_sends_a_canvas_and_returns_its_result(app, tasks):
    result = tasks.build_chain.delay(1)
    value = result.get(timeout=T)
    # AsyncResult.as_tuple(): the chain's last result, with the group and the steps before it as parents.
    sent = result_from_tuple(value, app)
    assert sent.get(timeout=T) == 15  # 2 → 4 → [7, 8] → 15
    assert sent.parent.results and len(sent.parent.results) == 2
    assert sent.parent.parent.parent.get(timeout=T) == 2
    # What the task sent first (the chain's first task) is its child, as with a Python task.
    assert [child.id for child in result.children] == [sent.parent.parent.parent.id]


def test_a_chord_in_a_chord_header_sent_by_a_worker_counts_once(tasks):
    # The worker that runs add(1, 1) sends the chord: the inner chord's body returns the outer chord's part.
    inner = chord([tasks.add.s(1), tasks.add.s(2)], tasks.xsum.s())
    workflow = chain(tasks.add.si(1, 1), chord([inner, tasks.add.s(10)], tasks.xsum.s()))
    assert workflow.apply_async().get(timeout=T) == 19  # [3 + 4, 12]
