"""swift-celery beat against real Redis and real Celery 5.7: exactly one message per slot across a kill -9 of the
leader, tasks run by Python and Swift workers, SIGHUP reload, --dry-run and bad schedule files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, STOP_TIMEOUT, swift_binary, unique
from interop_helpers import wait_for


class BeatProcess:
    """A `swift-celery beat` process; its output is kept in memory."""

    def __init__(self, schedule: Path, redis_url: str, prefix: str, *flags: str):
        binary = swift_binary()
        if not binary.exists():
            pytest.fail(f"swift-celery binary not found at {binary}: run `swift build` or set SWIFT_CELERY_BIN")
        self.cmd = [str(binary), "beat", "--schedule", str(schedule), "--broker", redis_url,
                    "--key-prefix", prefix, "--history-limit", "10000", "-l", "info", *flags]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(self.cmd, cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                                     bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines[-200:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return None
        return self.proc.returncode

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def write_schedule(path: Path, entries: list[dict]):
    path.write_text(json.dumps({"entries": entries}))


def history(redis_client, prefix: str, entry: str | None = None) -> list[dict]:
    """Beat's history records, oldest first."""
    records = [json.loads(raw) for raw in reversed(redis_client.lrange(prefix + "history", 0, -1))]
    return [r for r in records if entry is None or r["entry"] == entry]


def leader_pid(redis_client, prefix: str) -> int | None:
    token = redis_client.get(prefix + "lock")
    if token is None:
        return None
    return int(token.decode().split(":")[-2])


@pytest.fixture
def beats():
    started: list[BeatProcess] = []
    yield started
    for beat in started:
        beat.stop()


def test_two_beats_leader_killed_exactly_one_message_per_slot(redis_url, redis_client, tmp_path, beats):
    prefix = unique("beat-ha") + ":"
    queue = unique("beat-ha-q")
    schedule = tmp_path / "beat.json"
    write_schedule(schedule, [{"name": "tick", "task": "tasks.add", "schedule": 1, "args": [1, 2],
                               "options": {"queue": queue}}])
    lock_timeout = 2.0
    for _ in range(2):
        beats.append(BeatProcess(schedule, redis_url, prefix, "--lock-timeout", str(lock_timeout)))
    first = wait_for(lambda: leader_pid(redis_client, prefix), 30)
    assert first in (beats[0].pid, beats[1].pid), beats[0].log() + beats[1].log()
    leader = beats[0] if beats[0].pid == first else beats[1]
    standby = beats[1] if leader is beats[0] else beats[0]
    assert wait_for(lambda: len(history(redis_client, prefix)) >= 5, 30), leader.log()

    leader.kill9()
    killed_at = time.time()
    assert wait_for(lambda: leader_pid(redis_client, prefix) == standby.pid, lock_timeout + 10), standby.log()
    took_over = time.time() - killed_at
    assert wait_for(lambda: sum(r["leader"].split(":")[-2] == str(standby.pid)
                                for r in history(redis_client, prefix)) >= 5, 30), standby.log()
    assert standby.stop() == 0, standby.log()

    records = history(redis_client, prefix, "tick")
    dues = [r["due_ms"] for r in records]
    assert len(dues) == len(set(dues)), f"a slot was pushed twice: {dues}"
    # Consecutive slots 1 s apart, except where missed slots collapsed into one run (the failover).
    for before, after in zip(records, records[1:]):
        step = after["due_ms"] - before["due_ms"]
        assert step == 1000 or (step > 1000 and before["collapsed"]), (before, after)
    leaders = [r["leader"].split(":")[-2] for r in records]
    assert leaders[0] == str(leader.pid) and leaders[-1] == str(standby.pid)
    assert leaders == sorted(leaders, key=lambda pid: pid == str(standby.pid)), "leadership went back and forth"
    # What Redis holds in the queue is exactly what the history says was sent: the push and the advance are one.
    messages = [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]
    assert sorted(m["headers"]["id"] for m in messages) == sorted(r["id"] for r in records)
    assert all(m["headers"]["celery_beat_task"] is True for m in messages)
    state = redis_client.hgetall(prefix + "entry:tick")
    assert int(state[b"total_run_count"]) == len(records)
    assert took_over <= lock_timeout + 3, f"takeover took {took_over:.1f} s with a {lock_timeout} s lock"


def test_python_and_swift_workers_run_what_beat_pushes(redis_url, redis_client, tmp_path, beats, worker,
                                                       python_worker, app):
    prefix = unique("beat-run") + ":"
    schedule = tmp_path / "beat.yaml"
    schedule.write_text(f"""
entries:
  - name: to-python
    task: tasks.add
    schedule: 1s
    args: [2, 3]
    options: {{queue: {python_worker.queue}, priority: 5, expires: 60, headers: {{x-beat: "yes"}}}}
  - name: to-swift
    task: tasks.echo
    schedule: 1s
    args: [4]
    kwargs: {{k: v}}
    options: {{queue: {worker.queue}}}
""")
    beats.append(BeatProcess(schedule, redis_url, prefix))
    assert wait_for(lambda: len(history(redis_client, prefix, "to-python")) >= 2
                    and len(history(redis_client, prefix, "to-swift")) >= 2, 30), beats[0].log()
    for record in history(redis_client, prefix, "to-python")[:2]:
        assert app.AsyncResult(record["id"]).get(timeout=20) == 5
    for record in history(redis_client, prefix, "to-swift")[:2]:
        assert app.AsyncResult(record["id"]).get(timeout=20) == {"args": [4], "kwargs": {"k": "v"}}


def test_sighup_reloads_the_schedule(redis_url, redis_client, tmp_path, beats):
    prefix = unique("beat-hup") + ":"
    queue = unique("beat-hup-q")
    schedule = tmp_path / "beat.json"
    write_schedule(schedule, [{"name": "old", "task": "tasks.add", "schedule": 0.5, "options": {"queue": queue}}])
    beats.append(BeatProcess(schedule, redis_url, prefix))
    beat = beats[0]
    assert wait_for(lambda: history(redis_client, prefix, "old"), 30), beat.log()
    write_schedule(schedule, [{"name": "new", "task": "tasks.mul", "schedule": 0.5, "options": {"queue": queue}}])
    beat.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: history(redis_client, prefix, "new"), 15), beat.log()
    assert redis_client.zscore(prefix + "schedule", "old") is None
    assert not redis_client.exists(prefix + "entry:old")
    sent_old = len(history(redis_client, prefix, "old"))
    time.sleep(1.2)  # two of old's slots pass: a removed entry must stay silent
    assert len(history(redis_client, prefix, "old")) == sent_old
    # A broken file on SIGHUP keeps the schedule in use.
    schedule.write_text("entries: [")
    beat.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "schedule not reloaded" in beat.log(), 15), beat.log()
    count = len(history(redis_client, prefix, "new"))
    assert wait_for(lambda: len(history(redis_client, prefix, "new")) > count, 15), beat.log()
    assert beat.stop() == 0, beat.log()


@pytest.mark.parametrize("keep", [False, True])
def test_beat_gives_back_memory_after_its_first_step_and_runs_on(redis_url, redis_client, tmp_path, beats, keep):
    """After its first step (a leader's sync, a standby's try for the lock) beat releases its executable's unwritten
    pages (and trims the heap after each sync or send: docs/beat.md); what it runs again comes back on use.
    --keep-pages keeps them."""
    prefix = unique("beat-pages") + ":"
    queue = unique("beat-pages-q")
    schedule = tmp_path / "beat.json"
    write_schedule(schedule, [{"name": f"e{i}", "task": "tasks.add", "schedule": 0.5, "args": [i, 1],
                               "options": {"queue": queue}} for i in range(200)])
    beats.append(BeatProcess(schedule, redis_url, prefix, "-l", "debug", *(["--keep-pages"] if keep else [])))
    beat = beats[0]
    assert wait_for(lambda: len(history(redis_client, prefix)) >= 400, 30), beat.log()
    released = [line for line in beat.lines if "pages released" in line]
    if keep:
        assert released == [], beat.log()
    else:
        assert len(released) == 1 and "after=start-up" in released[0], beat.log()
        assert int(released[0].split("bytes=")[1].split()[0]) > 1 << 20, released[0]
    sent = len(history(redis_client, prefix))
    assert wait_for(lambda: len(history(redis_client, prefix)) >= sent + 400, 15), beat.log()
    assert redis_client.llen(queue) >= 800
    # A standby never syncs; it releases after its first try for the lock all the same.
    beats.append(BeatProcess(schedule, redis_url, prefix, "-l", "debug", *(["--keep-pages"] if keep else [])))
    standby = beats[1]
    if keep:
        time.sleep(2)
        assert not any("pages released" in line for line in standby.lines), standby.log()
    else:
        assert wait_for(lambda: any("pages released" in line for line in standby.lines), 10), standby.log()
    assert leader_pid(redis_client, prefix) == beat.pid
    assert standby.stop() == 0, standby.log()
    assert beat.stop() == 0, beat.log()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    binary = swift_binary()
    if not binary.exists():
        pytest.fail(f"swift-celery binary not found at {binary}")
    env = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "REDIS_URL")}
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60, env=env)


def test_dry_run_prints_next_fire_times(tmp_path):
    schedule = tmp_path / "beat.yaml"
    schedule.write_text("""
entries:
  - {name: halfhour, task: tasks.add, schedule: {crontab: "0,30 * * * *"}}
  - {name: ny, task: tasks.add, schedule: {crontab: "0 9 * * mon-fri", timezone: America/New_York}}
  - {name: off, task: tasks.add, schedule: 10, enabled: false}
""")
    result = run_cli("beat", "--schedule", str(schedule), "--dry-run", "--count", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("halfhour (tasks.add): crontab(minute='0,30'")
    times = [line.split()[0] for line in lines[1:4]]
    assert all(t.endswith(":00:00+00:00") or t.endswith(":30:00+00:00") for t in times), lines
    ny = lines.index(next(line for line in lines if line.startswith("ny ")))
    assert "America/New_York" in lines[ny + 1] and "T09:00:00-0" in lines[ny + 1], lines
    assert any(line.startswith("off (tasks.add)") and "[disabled]" in line for line in lines)


@pytest.mark.parametrize("text, words", [
    ("entries:\n  - {name: nightly, task: t, schedule: {hour: 25}}\n", ["entry 'nightly'", "schedule.hour", "25"]),
    ("entries:\n  - {name: fast, task: t, schedule: 5x}\n", ["entry 'fast'", "schedule", "5x"]),
    ("entries:\n  - {name: p, task: t, schedule: 5, options: {priority: 11}}\n", ["entry 'p'", "options.priority"]),
])
def test_a_bad_entry_stops_start_up_naming_entry_and_field(tmp_path, text, words):
    schedule = tmp_path / "beat.yaml"
    schedule.write_text(text)
    result = run_cli("beat", "--schedule", str(schedule), "--broker", "redis://127.0.0.1:1/0")
    assert result.returncode == 2, result.stdout + result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert str(schedule) in result.stderr


@pytest.mark.parametrize("flag, value", [("--lock-timeout", "0"), ("--starting-deadline", "-1"),
                                         ("--history-limit", "-5"), ("--count", "0")])
def test_bad_flags_are_refused(tmp_path, flag, value):
    schedule = tmp_path / "beat.yaml"
    schedule.write_text("entries: []\n")
    result = run_cli("beat", "--schedule", str(schedule), flag, value, "--broker", "redis://127.0.0.1:1/0")
    assert result.returncode == 64, result.stdout + result.stderr
    assert flag in result.stderr
