"""Task.replace and the request fields, driven by Python Celery 5.7 (after Celery's t/integration tests)."""

from __future__ import annotations

import uuid

import pytest
from celery import chain, chord, group
from celery.exceptions import ImproperlyConfigured
from conftest import RESULT_TIMEOUT
from interop_helpers import wait_for

T = RESULT_TIMEOUT


def echoed(redis_client, key):
    return [item.decode() for item in redis_client.lrange(key, 0, -1)]


def test_replaced_with_a_task_or_a_chain(tasks):
    assert tasks.add_replaced.delay(40, 2).get(timeout=T) == 42
    assert tasks.add_replaced_with_chain.delay(1336, 1).get(timeout=T) == 1337


def test_chain_continues_after_a_replaced_task(tasks):
    result = chain(tasks.add.s(1, 2), tasks.add_replaced.s(8), tasks.add.s(16), tasks.add.s(32)).apply_async()
    assert result.get(timeout=T) == 59
    assert result.parent.parent.get(timeout=T) == 11  # the replaced task's id holds the replacement's result


def test_replaced_with_a_chain_in_a_chain_with_links(tasks, redis_client):
    key = f"replace-echo-{uuid.uuid4().hex}"
    c = chain(tasks.identity.s("Hello "), tasks.replace_with_chain.s(link_msg="inner", redis_key=key),
              tasks.add.s("world"))
    c.link(tasks.redis_echo.s(redis_key=key))
    assert c.delay().get(timeout=T) == "Hello world"
    assert wait_for(lambda: sorted(echoed(redis_client, key)) == ["Hello world", "inner"], T)
    redis_client.delete(key)


def test_replaced_with_a_failing_chain_runs_both_errbacks(tasks, redis_client):
    key = f"replace-echo-{uuid.uuid4().hex}"
    c = chain(tasks.identity.s("Hello "),
              tasks.replace_with_chain_which_raises.s(link_msg="inner errback", redis_key=key),
              tasks.add.s("world"))
    c.link_error(tasks.redis_echo.si("outer errback", redis_key=key))
    result = c.delay()
    with pytest.raises(ValueError, match="Hello "):
        result.get(timeout=T)
    assert wait_for(lambda: {"inner errback", "outer errback"} <= set(echoed(redis_client, key)), T)
    redis_client.delete(key)


def test_replace_with_an_empty_chain_fails(tasks):
    result = chain(tasks.identity.s(1), tasks.replace_with_empty_chain.s()).delay()
    with pytest.raises(ImproperlyConfigured, match="Cannot replace with an empty chain"):
        result.get(timeout=T)


def test_replaced_with_a_group(tasks):
    assert tasks.add_to_all.delay([1, 2, 3], 10).get(timeout=T) == [11, 12, 13]
    assert tasks.add_to_all.delay([], 10).get(timeout=T) == []
    assert tasks.replace_with_chain_which_contains_a_group.delay().get(timeout=T) == [4, 4]


def test_group_replacements_keep_the_group_order(tasks):
    result = group([tasks.add_to_all.s([2, 1], 1), tasks.add_to_all.s([4, 3], 1)] * 5).delay()
    assert result.get(timeout=T) == [[3, 2], [5, 4]] * 5


def test_replaced_members_of_a_group(tasks):
    assert group(tasks.add_replaced.si(42, 1337), tasks.identity.si(31337)).delay().get(timeout=T) == [1379, 31337]


def test_replaced_parts_count_for_the_chord(tasks):
    header = [tasks.add.s(1, 1), tasks.add_replaced.s(2, 2), tasks.add_to_all.s([1, 2], 5)]
    result = chord(header, tasks.echo.s()).apply_async()
    assert result.get(timeout=T) == {"args": [[2, 4, [6, 7]]], "kwargs": {}}
    # replaced by a chain, and replaced as the last task of a chain in the header
    header = [tasks.add_replaced_with_chain.s(1, 2), chain(tasks.add.s(1, 1), tasks.add_replaced.s(10))]
    result = chord(header, tasks.echo.s()).apply_async()
    assert result.get(timeout=T) == {"args": [[3, 12]], "kwargs": {}}


def test_chord_body_replaced_with_a_group(tasks):
    assert chord([tasks.add.s(2, 5)], tasks.add_to_all.s(9)).delay().get(timeout=T) == [16]
    assert (group([tasks.add.s(2, 5), tasks.add.s(1, 1)]) | tasks.add_to_all.s(9)).delay().get(timeout=T) == [16, 11]


def test_links_are_carried_over(tasks):
    callback, errback = str(uuid.uuid4()), str(uuid.uuid4())
    result = tasks.add_replaced.apply_async((2, 3), link=tasks.mul.s(10).set(task_id=callback))
    assert result.get(timeout=T) == 5
    assert tasks.mul.AsyncResult(callback).get(timeout=T) == 50
    failing = tasks.fail_replaced.apply_async(("boom",), link_error=tasks.identity.s().set(task_id=errback))
    with pytest.raises(ValueError, match="boom"):
        failing.get(timeout=T)
    assert tasks.identity.AsyncResult(errback).get(timeout=T) == failing.id


def test_replaced_task_nesting(tasks):
    assert tasks.record_replaced_task_nesting.delay(3).get(timeout=T) == [0, 1, 2, 3]


def test_second_order_replace(tasks, redis_client):
    key = f"replace-echo-{uuid.uuid4().hex}"
    tasks.second_order_replace1.delay(key).get(timeout=T)
    assert echoed(redis_client, key) == ["In A", "In B", "In/Out C", "Out B", "Out A"]
    redis_client.delete(key)


def test_root_and_parent_ids_through_a_replacement(tasks):
    result = chain(tasks.ids.si(1), tasks.add_replaced.si(1, 2), tasks.ids.si(3)).apply_async()
    root = result.parent.parent.id
    replaced = result.parent.id
    assert result.get(timeout=T) == [root, replaced, 3]
    assert result.parent.get(timeout=T) == 3
    assert result.parent.parent.get(timeout=T) == [root, None, 1]
    # a callback of a chain step: the step is its parent, the chain's first task its root
    collected = chain(tasks.ids.si(1), tasks.collect_ids.s(2)).apply_async()
    assert collected.get(timeout=T) == [[root_of(collected), None, 1], [root_of(collected), root_of(collected), 2]]


def root_of(result):
    while result.parent is not None:
        result = result.parent
    return result.id


def test_request_fields(tasks):
    assert tasks.return_properties.apply_async(app_id="1234").get(timeout=T)["app_id"] == "1234"
    limits = tasks.return_request_time_limits.apply_async(time_limit=30, soft_time_limit=20).get(timeout=T)
    assert limits == {"time_limit": 30, "soft_time_limit": 20}
    assert tasks.return_request_time_limits.delay().get(timeout=T) == {"time_limit": None, "soft_time_limit": None}
    assert tasks.return_priority.apply_async(priority=3).get(timeout=T) == "Priority: 3"
    assert tasks.return_request_eta.apply_async(countdown=0.5).get(timeout=T) is not None
    assert tasks.return_request_eta.delay().get(timeout=T) is None


def count(redis_client, key):
    return int(redis_client.get(key) or 0)


def test_callback_of_a_task_replaced_with_a_chain_runs_once(tasks, redis_client):
    key = f"replace-count-{uuid.uuid4().hex}"
    task = tasks.add_replaced_with_chain.si(42, 1337)
    task.link(tasks.incr.si(key))
    assert task.delay().get(timeout=T) == 1379
    assert wait_for(lambda: count(redis_client, key) == 1, T)
    child = tasks.add_replaced_with_chain.si(42, 1337)
    child.link(tasks.incr.si(key))
    assert group(child, tasks.identity.si(31337)).delay().get(timeout=T) == [1379, 31337]
    assert wait_for(lambda: count(redis_client, key) == 2, T)
    # and no third run
    assert tasks.add.delay(0, 0).get(timeout=T) == 0
    assert count(redis_client, key) == 2
    redis_client.delete(key)


def test_errback_of_a_chain_with_a_replaced_child_runs_once(tasks, redis_client):
    key = f"replace-count-{uuid.uuid4().hex}"
    c = chain(tasks.add_replaced.si("fail", "ed"), tasks.fail.s())
    c.link_error(tasks.incr.si(key))
    with pytest.raises(ValueError, match="failed"):
        c.delay().get(timeout=T)
    assert wait_for(lambda: count(redis_client, key) == 1, T)
    assert tasks.add.delay(0, 0).get(timeout=T) == 0
    assert count(redis_client, key) == 1
    redis_client.delete(key)


@pytest.mark.parametrize("shape", ["first", "middle", "last", "group"])
def test_children_replaced_with_a_chain(tasks, shape):
    key = f"replace-echo-{uuid.uuid4().hex}"
    replaced = tasks.replace_with_chain
    if shape == "first":
        result, expected = chain(replaced.si(42, redis_key=key), tasks.identity.s()).delay(), 42
    elif shape == "middle":
        result, expected = chain(tasks.identity.s(42), replaced.s(redis_key=key), tasks.identity.s()).delay(), 42
    elif shape == "last":
        result, expected = chain(tasks.identity.s(42), replaced.s(redis_key=key)).delay(), 42
    else:
        result = group(tasks.identity.s(42), replaced.s(1337, redis_key=key), tasks.identity.s(31337)).delay()
        expected = [42, 1337, 31337]
    assert result.get(timeout=T) == expected
