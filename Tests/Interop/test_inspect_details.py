"""The details Celery 5.7's own integration suite (t/integration/test_inspect.py, test_tasks.py) asserts of a
worker's remote control: `registered` with `taskinfoitems`, `conf`, `report`, `scheduled`, and
`revoke_by_stamped_headers` with the stamped tasks it revokes.

With INTEROP_WORKER=python every test runs against Celery's own worker, which is how the answers were checked.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import celery.exceptions
import pytest
from celery.canvas import StampingVisitor

from conftest import worker_kind, RESULT_TIMEOUT
from interop_helpers import wait_for


@pytest.fixture
def inspect(app, worker):
    return app.control.inspect(destination=[worker.name], timeout=5)


def test_registered_with_task_info_items(inspect, worker):
    names = inspect.registered()[worker.name]
    assert "tasks.add" in names and all(isinstance(name, str) for name in names)
    named = inspect.registered("name")[worker.name]
    assert "tasks.add [name=tasks.add]" in named
    for info in named:
        assert re.fullmatch(r"\S+ \[name=\S+\]", info), info
    items = ("rate_limit", "ignore_result", "max_retries", "acks_late", "serializer", "default_retry_delay",
             "track_started", "typing", "_private", "no_such_attribute")
    detailed = inspect.registered(*items)[worker.name]
    assert ("tasks.add [ignore_result=False max_retries=3 acks_late=False serializer=json default_retry_delay=180 "
            "track_started=False typing=True]") in detailed


def test_conf_lists_changed_settings(inspect, worker):
    conf = inspect.conf()[worker.name]
    for key in ("accept_content", "broker_url", "result_backend", "deprecated_settings", "include"):
        assert key in conf, key
    assert conf["accept_content"] == ["json"]
    assert conf["deprecated_settings"] is None and isinstance(conf["include"], list)


@pytest.mark.swift_only
def test_conf_has_the_keys_celerys_suite_reads(inspect, worker):
    """Celery's suite runs its worker with its test app's settings (celery/contrib/testing/app.py), which `conf`
    lists as changed; a Swift worker always lists them, so `test_inspect.py::test_conf` holds."""
    conf = inspect.conf()[worker.name]
    for key in ("worker_hijack_root_logger", "worker_log_color", "accept_content", "enable_utc", "timezone",
                "broker_url", "result_backend", "broker_heartbeat", "deprecated_settings", "include"):
        assert key in conf, key


def test_report_is_a_bug_report(inspect, worker):
    report = inspect.report()[worker.name]
    assert list(report) == ["ok"]
    assert "software -> celery:" in report["ok"]
    assert "settings -> transport:redis" in report["ok"]


def test_scheduled_entry_has_the_timer_priority(app, inspect, worker, tasks):
    exec_time = datetime.now(timezone.utc) + timedelta(seconds=30)
    result = tasks.add.apply_async((1, 2), eta=exec_time)
    entries = wait_for(lambda: [entry for entry in (inspect.scheduled() or {}).get(worker.name, [])
                                if entry["request"]["id"] == result.id], 10)
    assert entries, worker.log()
    [entry] = entries
    assert entry["eta"] == exec_time.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"
    assert entry["priority"] == 6  # Celery's timer priority for every ETA task, not the message's
    request = entry["request"]
    assert request["args"] == [1, 2] and request["time_start"] is None and request["acknowledged"] is False
    assert request["delivery_info"] == {"exchange": "", "routing_key": worker.queue, "priority": 0,
                                        "redelivered": False}
    result.revoke()
    if worker_kind() == "swift":
        # Ours leaves a revoked task out of `scheduled` (it will not run); Python's lists it until it is due.
        assert wait_for(lambda: not [entry for entry in (inspect.scheduled() or {}).get(worker.name, [])
                                     if entry["request"]["id"] == result.id], 10)


def revoke_stamps(app, worker, headers, terminate=False):
    [reply] = app.control.revoke_by_stamped_headers(headers, terminate=terminate, destination=[worker.name],
                                                    reply=True, timeout=5)
    return reply[worker.name]


def test_revoke_by_stamped_headers_replies_as_celery(app, worker):
    value = uuid.uuid4().hex
    assert revoke_stamps(app, worker, {"myheader": [value]}) == {
        "ok": f"headers {{'myheader': ['{value}']}} flagged as revoked, but not terminated"}
    assert revoke_stamps(app, worker, {"h2": value, "h3": 5}) == {
        "ok": f"headers {{'h2': '{value}', 'h3': 5}} flagged as revoked, but not terminated"}
    assert revoke_stamps(app, worker, [f"a={value}", "c=d"]) == {
        "ok": f"headers {{'a': '{value}', 'c': 'd'}} flagged as revoked, but not terminated"}
    assert revoke_stamps(app, worker, {"h": [value]}, terminate=True) == {
        "ok": f"headers {{'h': ['{value}']}} were not terminated"}


class Stamp(StampingVisitor):
    def __init__(self, value):
        self.value = value

    def on_signature(self, sig, **headers):
        return {"monitoring_id": self.value, "stamped_headers": ["monitoring_id"]}


def test_stamped_task_is_revoked(app, worker, tasks):
    target = uuid.uuid4().hex
    revoke_stamps(app, worker, {"monitoring_id": [target, 4242]})
    for stamp, revoked in ((target, True), (uuid.uuid4().hex, False), (4242, True), ("4242", False)):
        signature = tasks.add.si(1, 1)
        signature.stamp(visitor=Stamp(stamp))
        result = signature.apply_async()
        if revoked:
            with pytest.raises(celery.exceptions.TaskRevokedError):
                result.get(timeout=RESULT_TIMEOUT)
            assert result.status == "REVOKED"
        else:
            assert result.get(timeout=RESULT_TIMEOUT) == 2


def test_stamped_running_task_is_terminated(app, worker, tasks):
    target = uuid.uuid4().hex
    signature = tasks.sleep.si(10)
    signature.stamp(visitor=Stamp(target))
    result = signature.apply_async()
    running = wait_for(lambda: [r for r in (app.control.inspect(destination=[worker.name], timeout=5).active()
                                            or {}).get(worker.name, []) if r["id"] == result.id], 10)
    assert running, worker.log()
    started = time.monotonic()
    assert revoke_stamps(app, worker, {"monitoring_id": [target]}, terminate=True) == {
        "ok": f"headers defaultdict(<class 'set'>, {{'monitoring_id': {{'{target}'}}}}) revoked"}
    with pytest.raises(celery.exceptions.TaskRevokedError):
        result.get(timeout=RESULT_TIMEOUT)
    assert time.monotonic() - started < 8


def test_stamped_chain_step_and_chord_body_are_revoked(app, worker, tasks):
    """Follow-ups the worker sends (a chain's next step, a chord's body) carry their signature's stamps."""
    from celery import chain, chord

    target = uuid.uuid4().hex
    revoke_stamps(app, worker, {"monitoring_id": target})
    for make in (lambda stamped: chain(tasks.add.si(1, 1), stamped),
                 lambda stamped: chord([tasks.add.si(1, 1), tasks.add.si(2, 2)], stamped)):
        stamped = tasks.identity.si("never")
        stamped.stamp(visitor=Stamp(target))
        result = make(stamped).apply_async()
        with pytest.raises(celery.exceptions.TaskRevokedError):
            result.get(timeout=RESULT_TIMEOUT)


@pytest.mark.parametrize("stamps", ["string", "list"])
def test_stamped_task_in_every_canvas_is_revoked(app, worker, tasks, stamps):
    """Celery's test_tasks.py::test_revoked_by_headers_complex_canvas, with short sleeps: the stamped task is
    revoked wherever it sits (group member, chord header or body, chain step), whoever sends it."""
    from celery import chain, chord, group

    value = uuid.uuid4().hex
    target = value if stamps == "string" else 1234
    revoke_stamps(app, worker, {"monitoring_id": value if stamps == "string" else [1234, value]})
    sleeping = tasks.sleep
    stamped = sleeping.si(0.2)
    stamped.stamp(visitor=Stamp(target))
    canvases = [
        group([stamped]),
        chord(group([stamped]), sleeping.si(0.2)),
        chord(group([sleeping.si(0.2)]), stamped),
        chain(stamped),
        group([sleeping.si(0.2), stamped, sleeping.si(0.2)]),
        chord([sleeping.si(0.2), stamped], sleeping.si(0.2)),
        chord([sleeping.si(0.2), sleeping.si(0.2)], stamped),
        chain(sleeping.si(0.2), stamped),
        chain(sleeping.si(0.2), group([sleeping.si(0.2), stamped, sleeping.si(0.2)])),
        chain(sleeping.si(0.2), group([sleeping.si(0.2), stamped]), sleeping.si(0.2)),
        chain(sleeping.si(0.2), group([sleeping.si(0.2), sleeping.si(0.2)]), stamped),
    ]
    for canvas in canvases:
        with pytest.raises(celery.exceptions.TaskRevokedError):
            canvas.apply_async().get(timeout=RESULT_TIMEOUT)


def test_revoke_by_stamped_headers_from_the_cli(redis_url, worker):
    from test_control import celery_cli

    value = uuid.uuid4().hex
    code, out, err = celery_cli(redis_url, "control", "revoke_by_stamped_headers", f"monitoring_id={value}",
                                "-d", worker.name, "-t", "10")
    assert code == 0, out + err
    assert f"headers {{'monitoring_id': '{value}'}} flagged as revoked, but not terminated" in out
