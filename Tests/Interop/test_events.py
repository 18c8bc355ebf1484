"""Monitoring: events (-E) read by Celery's own State and by Flower 2.2, the Prometheus endpoint, /healthz and
JSON logs, against a Swift worker started with -E --metrics-port --log-format json (docs/protocol.md §4)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import WorkerProcess, stopped_cleanly, unique, worker_kind
from interop_helpers import wait_for

pytestmark = pytest.mark.swift_only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")
    except OSError:
        return 0, ""


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


class EventRecorder:
    """A real app.events.Receiver feeding celery.events.state.State, in a thread, from before the worker starts."""

    def __init__(self, app):
        from celery.events.state import State

        self.app = app
        self.state = State()
        self.types: list[str] = []
        self.receiver = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.subscribed = threading.Event()

    def _on_event(self, event):
        self.types.append(event["type"])
        self.state.event(event)

    def _run(self):
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
            self.subscribed.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self):
        self.thread.start()
        assert self.subscribed.wait(10)
        time.sleep(0.5)  # PSUBSCRIBE is sent when capture starts consuming; no signal tells us when
        return self

    def stop(self):
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def monitored(redis_url):
    if worker_kind() != "swift":
        pytest.skip("Swift worker flags")
    from swift_tasks import make_app

    queue = unique("interop-events")
    name = f"{unique('events')}@localhost"
    app = make_app("events-client", broker=redis_url, backend=redis_url, queue=queue)
    recorder = EventRecorder(app).start()
    metrics_port = free_port()
    worker = WorkerProcess("swift", redis_url, queue=queue, name=name,
                           flags=["-E", "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1",
                                  "--log-format", "json"]).start()
    yield {"app": app, "worker": worker, "recorder": recorder, "metrics": f"http://127.0.0.1:{metrics_port}",
           "name": name}
    if worker.alive():
        stopped_cleanly(worker)
    recorder.stop()
    app.close()


def test_state_sees_the_swift_worker_online_with_heartbeats(monitored):
    state, name = monitored["recorder"].state, monitored["name"]
    assert wait_for(lambda: name in state.workers and len(state.workers[name].heartbeats) >= 2, 10), \
        f"events seen: {monitored['recorder'].types[-20:]}"
    worker = state.workers[name]
    assert worker.alive
    assert worker.freq == 2.0
    assert worker.sw_ident == "swift-celery"
    assert worker.pid == monitored["worker"].pid
    assert "worker-online" in monitored["recorder"].types


def test_state_follows_task_states(monitored):
    app, state, name = monitored["app"], monitored["recorder"].state, monitored["name"]
    ok = app.tasks["tasks.add"].delay(2, 3)
    bad = app.tasks["tasks.fail"].delay("boom")
    assert ok.get(timeout=15) == 5
    with pytest.raises(ValueError):
        bad.get(timeout=15)
    assert wait_for(lambda: ok.id in state.tasks and state.tasks[ok.id].state == "SUCCESS", 10)
    assert wait_for(lambda: bad.id in state.tasks and state.tasks[bad.id].state == "FAILURE", 10)
    task = state.tasks[ok.id]
    assert task.name == "tasks.add"
    assert task.args == "(2, 3)"
    assert task.result == "5"
    assert task.runtime is not None and task.runtime >= 0
    assert task.worker.hostname == name
    assert task.received and task.started and task.succeeded
    failed = state.tasks[bad.id]
    assert "boom" in failed.exception
    assert failed.traceback


def test_retried_task_is_seen_retrying_then_succeeding(monitored):
    app, state = monitored["app"], monitored["recorder"].state
    result = app.tasks["tasks.flaky"].delay(1)
    assert result.get(timeout=15) == 1
    assert wait_for(lambda: result.id in state.tasks and state.tasks[result.id].state == "SUCCESS", 10)
    assert state.tasks[result.id].retries == 1


def test_flower_api_lists_the_worker_and_its_tasks(monitored, redis_url):
    app, name = monitored["app"], monitored["name"]
    port = free_port()
    env = dict(os.environ, FLOWER_UNAUTHENTICATED_API="true")
    flower = subprocess.Popen([sys.executable, "-m", "celery", "--broker", redis_url, "flower", f"--port={port}",
                               "--address=127.0.0.1", "--inspect_timeout=500"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: http_get(f"{base}/healthcheck")[0] == 200, 30), "flower did not start"
        # Flower's worker status comes from events (heartbeats); give it one heartbeat cycle.
        assert wait_for(lambda: json.loads(http_get(f"{base}/api/workers?status=true")[1] or "{}").get(name), 10)
        result = app.tasks["tasks.add"].delay(20, 22)
        assert result.get(timeout=15) == 42

        def task_info():
            status, body = http_get(f"{base}/api/task/info/{result.id}")
            return json.loads(body) if status == 200 else None

        info = wait_for(lambda: (task_info() or {}).get("state") == "SUCCESS" and task_info(), 10)
        assert info, f"Flower has no SUCCESS for {result.id}"
        assert info["name"] == "tasks.add"
        assert info["result"] == "42"
        assert info["worker"] == name
        status, body = http_get(f"{base}/api/tasks?workername={name}")
        assert status == 200
        assert result.id in json.loads(body)
    finally:
        flower.terminate()
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            flower.kill()


def test_metrics_endpoint_counts_the_tasks_and_healthz_answers(monitored):
    app, base = monitored["app"], monitored["metrics"]
    status, text = http_get(f"{base}/metrics")
    assert status == 200
    before = samples(text).get('celery_tasks_succeeded_total{task="tasks.mul"}', 0)
    assert app.tasks["tasks.mul"].delay(6, 7).get(timeout=15) == 42
    after = samples(http_get(f"{base}/metrics")[1])
    assert after['celery_tasks_succeeded_total{task="tasks.mul"}'] == before + 1
    assert after['celery_task_runtime_seconds_count{task="tasks.mul"}'] >= 1
    assert f'celery_queue_length{{queue="{monitored["worker"].queue}"}}' in after
    assert "celery_prefetch_in_use" in after
    assert "celery_redis_reconnects_total" in after
    assert http_get(f"{base}/healthz")[0] == 200


def test_json_logs_parse(monitored):
    lines = [line for line in monitored["worker"].lines if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"timestamp", "level", "message", "metadata"} <= record.keys()
        assert isinstance(record["metadata"], dict)
    ready = next(r for r in records if r["message"] == "worker ready")
    assert ready["level"] == "info"
    assert ready["metadata"]["celery.hostname"] == monitored["name"]


def test_worker_offline_on_shutdown(monitored):
    state, name, worker = monitored["recorder"].state, monitored["name"], monitored["worker"]
    stopped_cleanly(worker)
    assert wait_for(lambda: "worker-offline" in monitored["recorder"].types, 10)
    assert not state.workers[name].alive
    assert http_get(f"{monitored['metrics']}/healthz")[0] == 0  # the endpoint stopped with the worker


@pytest.mark.parametrize("args, message", [
    (["--metrics-port", "70000"], "--metrics-port must be between 0 and 65535"),
    (["--metrics-port=-1"], "--metrics-port must be between 0 and 65535"),
    (["--log-format", "xml"], "--log-format must be text or json"),
    (["--metrics-host", "not a host", "--metrics-port", "0"], "cannot serve metrics on not a host:0"),
])
def test_bad_monitoring_configuration(redis_url, args, message):
    from conftest import swift_binary

    result = subprocess.run([str(swift_binary()), "worker", "--broker", redis_url, "-Q", unique("bad-monitoring"),
                             *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr, result.stdout + result.stderr


def test_metrics_port_in_use_is_named(redis_url):
    from conftest import swift_binary

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([str(swift_binary()), "worker", "--broker", redis_url, "-Q", unique("bad-monitoring"),
                                 "--metrics-host", "127.0.0.1", "--metrics-port", str(port)],
                                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stdout + result.stderr, result.stderr
