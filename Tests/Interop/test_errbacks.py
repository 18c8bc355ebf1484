"""Celery's two kinds of errbacks, driven by Python Celery 5.7: an errback taking more than one argument beyond
those its signature stores runs in the worker where the task failed, with (request, exc, traceback); any other is
sent as a task with the failed task's id (celery/backends/base.py `_call_task_errbacks`)."""

from __future__ import annotations

import uuid

import pytest
from celery import chord
from conftest import RESULT_TIMEOUT
from interop_helpers import wait_for

T = RESULT_TIMEOUT


def pushed(redis_client, key):
    return [item.decode() for item in redis_client.lrange(key, 0, -1)]


def test_new_style_errback_gets_the_request_the_exception_and_the_traceback(tasks, redis_client):
    key = f"errback-{uuid.uuid4()}"
    failing = tasks.fail.s("boom")
    failing.link_error(tasks.errback_new_style.s(key))
    result = failing.delay()
    with pytest.raises(ValueError):
        result.get(timeout=T)
    assert wait_for(lambda: pushed(redis_client, key), T)
    assert pushed(redis_client, key) == [f"{result.id} ValueError Traceback (most recent call last):"]
    redis_client.delete(key)


def test_old_style_errback_is_sent_the_failed_id(tasks, redis_client):
    # redis_echo(message, redis_key) with redis_key stored: one free parameter, so it is sent with the failed id.
    key = f"errback-{uuid.uuid4()}"
    failing = tasks.fail.s("boom")
    failing.link_error(tasks.redis_echo.s(redis_key=key))
    result = failing.delay()
    with pytest.raises(ValueError):
        result.get(timeout=T)
    assert wait_for(lambda: pushed(redis_client, key), T)
    assert pushed(redis_client, key) == [result.id]
    redis_client.delete(key)


def test_new_style_errback_of_a_failed_chord_body(tasks, redis_client):
    key = f"errback-{uuid.uuid4()}"
    body = tasks.fail.s()
    body.link_error(tasks.errback_new_style.s(key))
    result = chord([tasks.add.s(1, 2), tasks.add.s(3, 4)], body).delay()
    with pytest.raises(Exception):
        result.get(timeout=T)
    assert wait_for(lambda: pushed(redis_client, key), T)
    [line] = pushed(redis_client, key)
    assert line.startswith(f"{result.id} ")
    redis_client.delete(key)
