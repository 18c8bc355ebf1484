"""Celery's built-in tasks (celery/app/builtins.py) sent by Python Celery 5.7: `add.map(...)`, `add.starmap(...)`,
`add.chunks(...)`, the `celery.chunks` task itself and `celery.backend_cleanup`, as canvases and chain steps.

With INTEROP_WORKER=python every test runs against Celery's own worker, which is how the answers were checked.
"""

from __future__ import annotations

import pytest
from celery import chain, group
from celery.result import result_from_tuple

from conftest import RESULT_TIMEOUT


def test_map_calls_the_task_for_each_item(tasks):
    assert tasks.identity.map([1, [2], "x"]).apply_async().get(timeout=RESULT_TIMEOUT) == [1, [2], "x"]


def test_starmap_keeps_frozen_id_and_link(tasks):
    sig = tasks.add.starmap([(1, 1), (2, 2)])
    sig.link(tasks.identity.si("starmap done"))
    frozen = sig.freeze()
    result = sig.apply_async()
    assert result.id == frozen.id
    assert result.get(timeout=RESULT_TIMEOUT) == [2, 4]
    [child] = result.children
    assert child.get(timeout=RESULT_TIMEOUT) == "starmap done"


def test_starmap_in_a_group_and_a_chain(worker, tasks):
    # In a group the starmap is sent without its task's route: it names the queue.
    in_group = group(tasks.add.starmap([(1, 1), (2, 2)]).set(queue=worker.queue), tasks.add.s(3, 3))
    assert in_group.delay().get(timeout=RESULT_TIMEOUT) == [[2, 4], 6]
    in_chain = chain(tasks.add.si(1, 1), tasks.add.starmap([(1, 1), (2, 2)]).set(queue=worker.queue))
    assert in_chain.delay().get(timeout=RESULT_TIMEOUT) == [2, 4]
    mapped = chain(tasks.add.si(1, 1), tasks.identity.map([5, 6]).set(queue=worker.queue))
    assert mapped.delay().get(timeout=RESULT_TIMEOUT) == [5, 6]


def test_chunks_run_as_a_group_of_starmaps(worker, tasks):
    # Celery sends the group without the task's route (to the default queue): it names the queue.
    result = tasks.add.chunks(zip(range(5), range(5)), 2).apply_async(queue=worker.queue)
    assert result.get(timeout=RESULT_TIMEOUT) == [[0, 2], [4, 6], [8]]


@pytest.mark.swift_only
def test_the_chunks_task_returns_its_group(app, worker, tasks):
    """Python's worker sends the group to the default queue `celery` (the task's route is lost), which no test
    worker consumes; a Swift worker keeps it on the queue the task came from. The result's shape was checked
    against Python's worker on `celery`."""
    result = app.send_task("celery.chunks", kwargs={"task": tasks.add.s(), "it": [[1, 1], [2, 2], [3, 3]], "n": 2},
                           queue=worker.queue)
    value = result.get(timeout=RESULT_TIMEOUT)
    # The GroupResult as a tuple: [[group id, None], [[[task id, None], None], ...]].
    assert isinstance(value, list) and len(value) == 2 and value[0][1] is None
    assert [member[1] for member in value[1]] == [None, None]
    chunks = result_from_tuple(value, app=app)
    assert chunks.get(timeout=RESULT_TIMEOUT) == [[2, 4], [6]]
    assert all(part.parent.id == result.id if part.parent else True for part in chunks.results)


def test_map_errors_are_celerys(app, worker, tasks):
    with pytest.raises(TypeError, match=r"add\(\) missing 1 required positional argument: 'y'"):
        tasks.add.map([1, 2]).apply_async().get(timeout=RESULT_TIMEOUT)
    unknown = app.signature("celery.map", kwargs={"task": app.signature("nope.x"), "it": [1]})
    result = unknown.apply_async(queue=worker.queue)
    with pytest.raises(Exception) as raised:
        result.get(timeout=RESULT_TIMEOUT)
    assert type(raised.value).__name__ == "NotRegistered"
    assert raised.value.args == ("nope.x",)


def test_backend_cleanup_succeeds(app, worker):
    result = app.send_task("celery.backend_cleanup", queue=worker.queue)
    assert result.get(timeout=RESULT_TIMEOUT) is None
    assert result.state == "SUCCESS"


def test_registered_lists_builtins_only_when_asked(app, worker):
    plain = app.control.inspect(destination=[worker.name], timeout=5).registered()[worker.name]
    assert not [name for name in plain if name.startswith("celery.")]
    replies = app.control.broadcast("registered", arguments={"builtins": True}, destination=[worker.name],
                                    reply=True, timeout=5)
    [reply] = replies
    names = reply[worker.name]
    for name in ("celery.backend_cleanup", "celery.chord_unlock", "celery.chunks", "celery.map", "celery.starmap"):
        assert name in names
    assert "tasks.add" in names and names == sorted(names)
