"""Redis Sentinel (issue #31): the Swift worker, beat's and ping's clients find the master through the sentinels,
and follow it through `SENTINEL FAILOVER`, a kill -9 of the master, and the old master coming back as a replica,
each in the middle of a stream of acks-late tasks. Celery's own failover bugs (celery#6348, celery#10096,
celery#7946) are the cases: no failover when the master is lost, no reconnect after a failover, a demoted master
answering READONLY forever.

Each failover test has a deployment of its own (scripts/test-sentinel.sh: a master, a replica and three sentinels on
loopback, down after 1.5 s), so the tests do not depend on one another. Python's Celery 5.7 on the same sentinels
enqueues and reads results through kombu's `sentinel://` transport.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, WorkerProcess, stopped_cleanly, swift_binary, unique
from interop_helpers import encode, envelope, wait_for
from test_security import process_views

pytestmark = [
    pytest.mark.swift_only,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

SCRIPT = ROOT / "scripts" / "test-sentinel.sh"
# The issue's bound: the worker consumes again within 5 s of the new master being elected.
CONSUME_AGAIN_WITHIN = 5.0


class Deployment:
    """A master, a replica and three sentinels, started and stopped by scripts/test-sentinel.sh."""

    def __init__(self, directory: Path):
        self.directory = directory
        result = subprocess.run(["bash", str(SCRIPT), "start", str(directory)], capture_output=True, text=True,
                                timeout=180)
        if result.returncode != 0:
            pytest.fail(f"scripts/test-sentinel.sh start failed:\n{result.stderr}")
        values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        self.kombu_url = values["SENTINEL_URL"]
        self.master_name = values["SENTINEL_MASTER_NAME"]
        self.password = values["SENTINEL_PASSWORD"]
        self.master_password = values["SENTINEL_MASTER_PASSWORD"]
        self.sentinel_ports = [int(p) for p in values["SENTINEL_PORTS"].split()]
        self.restarted: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """The URL the Swift worker is given: kombu's, with the master name and the sentinels' password."""
        return f"{self.kombu_url}?master_name={self.master_name}&sentinel_password={self.password}"

    def stop(self):
        for process in self.restarted:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.directory)], timeout=60)

    def sentinel(self):
        import redis.sentinel

        return redis.sentinel.Sentinel([("127.0.0.1", p) for p in self.sentinel_ports], socket_timeout=2,
                                       sentinel_kwargs={"password": self.password, "socket_timeout": 2},
                                       password=self.master_password)

    def master_address(self) -> tuple[str, int] | None:
        """The master as the first sentinel that answers names it."""
        import redis

        for port in self.sentinel_ports:
            try:
                client = redis.Redis(port=port, password=self.password, socket_timeout=2)
                try:
                    reply = client.sentinel_get_master_addr_by_name(self.master_name)
                finally:
                    client.close()
                if reply:
                    host = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
                    return host, int(reply[1])
            except redis.exceptions.RedisError:
                continue
        return None

    def redis(self, port: int):
        import redis

        return redis.Redis(port=port, password=self.master_password, socket_timeout=5)

    def server_named(self, port: int) -> str:
        """`master` or `replica`: the directory of the data server listening on `port` (as first started)."""
        for name in ("master", "replica"):
            if f"port {port}\n" in (self.directory / name / "redis.conf").read_text():
                return name
        raise AssertionError(f"no data server on port {port}")

    def kill(self, port: int):
        name = self.server_named(port)
        pid = int((self.directory / name / "pid").read_text())
        os.kill(pid, 9)
        assert wait_for(lambda: not _alive(pid), 10), f"redis-server {pid} survived kill -9"

    def restart(self, port: int):
        name = self.server_named(port)
        log = open(self.directory / name / "stdout.log", "a")
        process = subprocess.Popen(["redis-server", str(self.directory / name / "redis.conf")],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.restarted.append(process)
        (self.directory / name / "pid").write_text(f"{process.pid}\n")

    def failover(self):
        """SENTINEL FAILOVER, retried while a sentinel refuses it (a replica not yet in sync, say)."""
        import redis

        deadline = time.monotonic() + 30
        while True:
            try:
                client = redis.Redis(port=self.sentinel_ports[0], password=self.password, socket_timeout=5)
                client.execute_command("SENTINEL", "FAILOVER", self.master_name)
                client.close()
                return
            except redis.exceptions.ResponseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def wait_for_new_master(self, old: tuple[str, int], timeout: float = 60) -> tuple[tuple[str, int], float]:
        """The new master and the moment a sentinel first named it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = self.master_address()
            if address is not None and address != old:
                return address, time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"no new master elected within {timeout} s")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def deployment(tmp_path):
    d = Deployment(tmp_path / "sentinel")
    yield d
    d.stop()


class Producer(threading.Thread):
    """Enqueues tasks.add(i, i) through the sentinels (redis-py follows the master), and waits after each send
    with `WAIT 1` until the replica has it: an enqueue that WAIT confirms is one that must never be lost."""

    def __init__(self, deployment: Deployment, queue: str, interval: float = 0.05):
        super().__init__(daemon=True)
        self.deployment = deployment
        self.queue = queue
        self.interval = interval
        self.stopping = threading.Event()
        self.replicated: dict[str, int] = {}  # task id -> expected result
        self.accepted: dict[str, tuple[int, float]] = {}  # every LPUSH a master took: expected result, sent at
        self.unconfirmed = 0
        self.errors = 0

    def run(self):
        master = self.deployment.sentinel().master_for(self.deployment.master_name, socket_timeout=3)
        import redis

        i = 0
        while not self.stopping.is_set():
            i += 1
            message = envelope("tasks.add", (i, i), queue=self.queue)
            started = time.monotonic()
            try:
                master.lpush(self.queue, encode(message))
                # When the send started: one started after the master died cannot have reached it.
                self.accepted[message["headers"]["id"]] = (2 * i, started)
                if master.execute_command("WAIT", 1, 1000) >= 1:
                    self.replicated[message["headers"]["id"]] = 2 * i
                else:
                    self.unconfirmed += 1
            except redis.exceptions.RedisError:
                self.errors += 1
                time.sleep(0.1)
            time.sleep(self.interval)

    def finish(self):
        self.stopping.set()
        self.join(30)


def results(client, ids) -> dict[str, dict]:
    keys = [f"celery-task-meta-{task_id}" for task_id in ids]
    found = {}
    for task_id, raw in zip(ids, client.mget(keys) if keys else []):
        if raw is not None:
            found[task_id] = json.loads(raw)
    return found


def probe(deployment: Deployment, master: tuple[str, int], queue: str, elected: float) -> float:
    """Enqueues one task on the new master and returns how long after the election its result was stored."""
    client = deployment.redis(master[1])
    message = envelope("tasks.add", (20, 22), queue=queue)
    key = f"celery-task-meta-{message['headers']['id']}"
    # The new master may take a moment to accept writes after the sentinels name it.
    assert wait_for(lambda: _try(lambda: client.lpush(queue, encode(message))), 10), "the new master refuses LPUSH"
    assert wait_for(lambda: _try(lambda: client.get(key)), 30, interval=0.02), "the probe task got no result"
    took = time.monotonic() - elected
    assert json.loads(client.get(key))["result"] == 42
    client.close()
    return took


def _try(action):
    import redis

    try:
        return action()
    except redis.exceptions.RedisError:
        return None


def run_through(deployment: Deployment, scenario: str, capsys):
    queue = unique("sentinel")
    probe_queue = unique("sentinel-probe")
    # A short visibility timeout: a write the old master took but never replicated (a result, an ack) is not
    # lost, its message comes back from `unacked` and runs again (at least once, as documented).
    worker = WorkerProcess("swift", deployment.url, queue=f"{queue},{probe_queue}", name=f"{unique('sentinel')}@localhost",
                           flags=["--acks-late", "--visibility-timeout=10"]).start()
    producer = Producer(deployment, queue)
    producer.start()
    try:
        old = deployment.master_address()
        assert old is not None
        client = deployment.redis(old[1])
        # The stream flows: tasks are enqueued, replicated and done.
        assert wait_for(lambda: len(results(client, list(producer.replicated))) >= 20, 60), worker.log()
        client.close()

        if scenario == "failover":
            deployment.failover()
        else:
            deployment.kill(old[1])
        killed = time.monotonic()
        new, elected = deployment.wait_for_new_master(old)
        took = probe(deployment, new, probe_queue, elected)

        if scenario == "old-master-returns":
            deployment.restart(old[1])
            returned = deployment.redis(old[1])
            assert wait_for(lambda: _try(lambda: returned.execute_command("ROLE")[0] == b"slave"), 60), \
                "the old master did not come back as a replica"
            returned.close()
        # The stream goes on through the new master: 20 more enqueues after the election, and after a
        # SENTINEL FAILOVER 10 more confirmed by a replica (redis-py, like kombu, keeps writing to the old master
        # until the sentinels demote it, up to 10 s later).
        after, confirmed = len(producer.accepted), len(producer.replicated)
        assert wait_for(lambda: len(producer.accepted) >= after + 20, 30, interval=0.1), "the producer is stuck"
        if scenario == "failover":
            assert wait_for(lambda: len(producer.replicated) >= confirmed + 10, 30, interval=0.1), \
                "no enqueue confirmed after the failover"
            # The worker followed +switch-master rather than waiting for the demotion.
            assert "Sentinel switched the Redis master" in worker.log(), worker.log()
        producer.finish()
        finished = time.monotonic()

        master = deployment.sentinel().master_for(deployment.master_name, socket_timeout=5)
        # Every enqueue the replica confirmed. After a kill -9 the dead master takes nothing more, so every enqueue
        # accepted since went to the new master (which has no replica to confirm it until the old one is back):
        # those too. (After SENTINEL FAILOVER the old master accepts writes until the sentinels demote it, up to
        # 10 s later, and drops them then; only the confirmed ones count there.)
        expected = dict(producer.replicated)
        if scenario != "failover":
            expected.update({t: value for t, (value, sent) in producer.accepted.items() if sent > killed})
        done = wait_for(lambda: len(results(master, list(expected))) == len(expected), 60, interval=0.25)
        found = results(master, list(expected))
        missing = sorted(set(expected) - set(found))
        with capsys.disabled():
            print(f"\n[sentinel {scenario}] consumed again {took:.2f} s after the election; "
                  f"{len(producer.replicated)} enqueues confirmed by WAIT, {len(expected)} that must have a result, "
                  f"{producer.unconfirmed} unconfirmed, {producer.errors} refused; {len(missing)} without a result "
                  f"{time.monotonic() - finished:.1f} s after the stream ended")
        assert done and not missing, f"{len(missing)} tasks have no result: {missing[:5]}\n{worker.log()}"
        assert all(found[t]["status"] == "SUCCESS" and found[t]["result"] == expected[t] for t in expected)
        assert took <= CONSUME_AGAIN_WITHIN, f"consumed again only {took:.2f} s after the election\n{worker.log()}"
        assert "worker ready" in worker.log()
        # Neither password shows in the log or in what `ps` shows of the worker.
        views = process_views(worker.pid) + worker.log()
        assert deployment.password not in views and deployment.master_password not in views, views
    finally:
        producer.finish()
        stopped_cleanly(worker)


def test_sentinel_failover_during_acks_late_stream(deployment, capsys):
    run_through(deployment, "failover", capsys)


def test_kill_9_of_the_master_during_acks_late_stream(deployment, capsys):
    run_through(deployment, "kill", capsys)


def test_old_master_returns_as_a_replica_during_acks_late_stream(deployment, capsys):
    run_through(deployment, "old-master-returns", capsys)


# -- Python's Celery on the same sentinels --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared():
    """The deployment scripts/test-redis.sh started for the whole run, or one of this module's own."""
    if os.environ.get("SWIFT_CELERY_TEST_SENTINEL_URL"):
        d = Deployment.__new__(Deployment)
        d.directory = Path(os.environ["SWIFT_CELERY_TEST_SENTINEL_DIR"])
        d.kombu_url = os.environ["SWIFT_CELERY_TEST_SENTINEL_URL"]
        d.master_name = os.environ["SWIFT_CELERY_TEST_SENTINEL_MASTER_NAME"]
        d.password = os.environ["SWIFT_CELERY_TEST_SENTINEL_PASSWORD"]
        d.master_password = os.environ["SWIFT_CELERY_TEST_SENTINEL_MASTER_PASSWORD"]
        d.sentinel_ports = [int(p) for p in os.environ["SWIFT_CELERY_TEST_SENTINEL_PORTS"].split()]
        d.restarted = []
        yield d
        return
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        d = Deployment(Path(directory) / "sentinel")
        yield d
        d.stop()


def test_python_celery_enqueues_and_reads_results_through_sentinel(shared):
    from swift_tasks import make_app

    queue = unique("sentinel-py")
    worker = WorkerProcess("swift", shared.url, queue=queue, name=f"{unique('sentinel-py')}@localhost").start()
    options = {"master_name": shared.master_name, "sentinel_kwargs": {"password": shared.password}}
    app = make_app("sentinel-interop", broker=shared.kombu_url, backend=shared.kombu_url, queue=queue,
                   broker_transport_options=options, result_backend_transport_options=options)
    try:
        assert app.tasks["tasks.add"].delay(2, 3).get(timeout=30) == 5
        results = [app.tasks["tasks.add"].delay(i, 1) for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [i + 1 for i in range(20)]
    finally:
        app.close()
        stopped_cleanly(worker)


def test_python_stubs_take_sentinel_settings_from_the_environment(shared, monkeypatch):
    """The generated stubs' make_app reads the same variables as the worker: one environment for both sides."""
    from swift_tasks import make_app

    queue = unique("sentinel-env")
    for name, value in (("CELERY_BROKER_URL", shared.kombu_url), ("CELERY_BROKER_MASTER_NAME", shared.master_name),
                        ("REDIS_SENTINEL_PASSWORD", shared.password)):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    worker = WorkerProcess("swift", shared.url, queue=queue, name=f"{unique('sentinel-env')}@localhost").start()
    app = make_app("sentinel-env", queue=queue)
    try:
        assert app.conf.broker_transport_options["master_name"] == shared.master_name
        assert app.tasks["tasks.add"].delay(20, 22).get(timeout=30) == 42
    finally:
        app.close()
        stopped_cleanly(worker)


def test_ping_and_env_master_name(shared):
    """`swift-celery ping` through the sentinels; the master name and the sentinels' password from the environment
    (CELERY_BROKER_MASTER_NAME, REDIS_SENTINEL_PASSWORD); neither password in the output."""
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "REDIS_URL", "REDIS_PASSWORD")}
    env.update(CELERY_BROKER_MASTER_NAME=shared.master_name, REDIS_SENTINEL_PASSWORD=shared.password)
    result = subprocess.run([str(swift_binary()), "ping", "--broker", shared.kombu_url, "--count", "2"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: sentinel://:***@127.0.0.1:"), result.stdout
    master = shared.master_address()
    assert f"master {master[0]}:{master[1]} named by Sentinel" in result.stdout, result.stdout
    assert shared.password not in result.stdout + result.stderr
    assert shared.master_password not in result.stdout + result.stderr

    env.pop("CELERY_BROKER_MASTER_NAME")
    result = subprocess.run([str(swift_binary()), "ping", "--broker", shared.kombu_url],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.search(r"master_name|CELERY_BROKER_MASTER_NAME", result.stderr), result.stderr


def test_swift_client_sends_and_waits_through_sentinel(shared):
    queue = unique("sentinel-send")
    worker = WorkerProcess("swift", shared.url, queue=queue, name=f"{unique('sentinel-send')}@localhost").start()
    try:
        result = subprocess.run([str(swift_binary()), "send", "tasks.add", "19", "23", "-Q", queue, "--wait",
                                 "--broker", shared.url], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().splitlines()[-1] == "42", result.stdout
    finally:
        stopped_cleanly(worker)


def test_beat_through_sentinel(shared, tmp_path):
    """Beat finds the master through the sentinels too, and a worker there runs what it pushes."""
    from test_beat import BeatProcess, history

    queue = unique("sentinel-beat")
    worker = WorkerProcess("swift", shared.url, queue=queue, name=f"{unique('sentinel-beat')}@localhost").start()
    prefix = unique("sentinel-beat") + ":"
    schedule = tmp_path / "beat.yaml"
    schedule.write_text(f"entries:\n  - {{name: add, task: tasks.add, schedule: 1s, args: [2, 5], "
                        f"options: {{queue: {queue}}}}}\n")
    beat = BeatProcess(schedule, shared.url, prefix)
    master = shared.sentinel().master_for(shared.master_name, socket_timeout=5)
    try:
        assert wait_for(lambda: len(history(master, prefix, "add")) >= 2, 30), beat.log()
        for record in history(master, prefix, "add")[:2]:
            key = f"celery-task-meta-{record['id']}"
            assert wait_for(lambda: master.get(key), 20), worker.log()
            assert json.loads(master.get(key))["result"] == 7
    finally:
        assert beat.stop() == 0, beat.log()
        stopped_cleanly(worker)
