"""End-to-end throughput: Python Celery's prefork worker vs the swift-celery worker, same Redis, same run.

For each worker: FLUSHDB, pre-enqueue N `tasks.add` messages (kombu-exact envelopes, LPUSHed in a pipeline;
enqueue time is not counted), start the worker, and time until all N `celery-task-meta-<id>` keys exist.
A separate start on an empty queue measures idle RSS (VmRSS of the worker and its child processes, 2 s after
"ready"). Prints a markdown table.

    python Benchmarks/worker_vs_celery.py --redis-url redis://127.0.0.1:PORT/0 [-n 20000] [--only python|swift]

Benchmarks/worker-vs-celery.sh starts a throw-away redis-server and builds the release binary first.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
PY_TASKS = ROOT / "tasks" / "python"
QUEUE = "bench"
SEP = "\x06\x16"


def envelope(task_id: str, args: list, eta: str | None = None) -> bytes:
    """The element kombu 5.7 LPUSHes for app.send_task('tasks.add', args, queue=QUEUE) (docs/protocol.md §1.1;
    Tests/Interop/test_worker.py::test_envelope_helper_matches_kombu checks the same layout against kombu)."""
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return json.dumps({
        "body": base64.b64encode(body.encode()).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": "tasks.add", "id": task_id, "shadow": None, "eta": eta, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}", "origin": f"bench@{socket.gethostname()}",
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": QUEUE}, "priority": 0, "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }).encode()


def enqueue(r: redis.Redis, n: int, eta: str | None = None, consumed: bool = False) -> list[tuple[str, int, int]]:
    """Pushes n tasks.add messages onto QUEUE (checking they are all there, unless a worker consumes it already)."""
    jobs = [(str(uuid.uuid4()), random.randrange(1 << 30), random.randrange(1 << 30)) for _ in range(n)]
    r.sadd("_kombu.binding.celery", f"{QUEUE}{SEP}{SEP}{QUEUE}")
    pipe = r.pipeline(transaction=False)
    for i, (tid, x, y) in enumerate(jobs, 1):
        pipe.lpush(QUEUE, envelope(tid, [x, y], eta))
        if i % 2000 == 0:
            pipe.execute()
    pipe.execute()
    assert consumed or r.llen(QUEUE) == n
    return jobs


def rss_kib(pid: int) -> int:
    """VmRSS of pid plus all its descendants, in KiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Worker:
    def __init__(self, kind: str, url: str, concurrency: int, swift_bin: Path | None, flags=(), pool="prefork"):
        self.kind, self.url, self.concurrency = kind, url, concurrency
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{kind}-", suffix=".log", delete=False)
        if kind == "python":
            env = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url, REDIS_URL=url,
                       SWIFT_CELERY_QUEUE=QUEUE,
                       PYTHONPATH=os.pathsep.join(filter(None, [str(PY_TASKS), os.environ.get("PYTHONPATH")])))
            for flag in flags:
                if flag == "--acks-late":
                    env["REFERENCE_ACKS_LATE"] = "1"
                else:
                    raise ValueError(f"no Python equivalent for {flag}")
            self.cmd = [sys.executable, "-m", "celery", "-A", "reference_worker", "worker", "-P", pool,
                        "-c", str(concurrency), "-Q", QUEUE, "-n", "bench-python@localhost", "-l", "info",
                        "--without-gossip", "--without-mingle", "--without-heartbeat"]
            self.cwd, self.env, self.ready_text = str(PY_TASKS), env, " ready."
        else:
            self.cmd = [str(swift_bin), "worker", "--broker", url, "--result-backend", url, "-Q", QUEUE,
                        "-c", str(concurrency), "-n", "bench-swift@localhost", "-l", "info", *flags]
            self.cwd, self.env, self.ready_text = str(ROOT), dict(os.environ), "worker ready"

    def start(self, timeout: float = 60.0) -> float:
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = self.spawned + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} worker exited with {self.proc.returncode}:\n{self.tail()}")
            with open(self.log.name, "rb") as f:
                if self.ready_text.encode() in f.read():
                    self.ready = time.monotonic()
                    return self.ready
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.kind} worker not ready within {timeout:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        with open(self.log.name, "rb") as f:
            return f.read()[-4000:].decode("utf-8", "replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


def wait_all(r: redis.Redis, ids: list[str], timeout: float) -> float | None:
    remaining = list(ids)
    deadline = time.monotonic() + timeout
    # DBSIZE is O(1): wait until there are at least as many keys as results (plus the binding set) before
    # checking each id, so the poller does not compete with the worker for CPU
    while r.dbsize() < len(ids) + 1:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
    # The time is taken before each sweep: checking 50,000 ids takes longer than the poll interval, and it is the
    # poller's time, not the worker's.
    while remaining:
        swept = time.monotonic()
        pipe = r.pipeline(transaction=False)
        for tid in remaining:
            pipe.exists(f"celery-task-meta-{tid}")
        found = pipe.execute()
        remaining = [tid for tid, hit in zip(remaining, found) if not hit]
        if not remaining:
            return swept
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)
    return time.monotonic()


def check_sample(r: redis.Redis, jobs, k: int = 200) -> None:
    sample = random.sample(jobs, min(k, len(jobs)))
    values = r.mget([f"celery-task-meta-{tid}" for tid, _, _ in sample])
    for (tid, x, y), raw in zip(sample, values):
        meta = json.loads(raw)
        if meta["status"] != "SUCCESS" or meta["result"] != x + y:
            raise AssertionError(f"task {tid}: add({x}, {y}) stored {meta}")


def run(kind: str, url: str, n: int, concurrency: int, swift_bin, timeout: float) -> dict:
    r = redis.Redis.from_url(url)
    # idle RSS: an empty queue, 2 s after ready
    r.flushdb()
    w = Worker(kind, url, concurrency, swift_bin)
    w.start()
    time.sleep(2)
    idle_rss = rss_kib(w.proc.pid)
    w.stop()
    # throughput
    r.flushdb()
    t0 = time.monotonic()
    jobs = enqueue(r, n)
    enqueue_s = time.monotonic() - t0
    w = Worker(kind, url, concurrency, swift_bin)
    ready = w.start()
    done = wait_all(r, [tid for tid, _, _ in jobs], timeout)
    busy_rss = rss_kib(w.proc.pid)
    code = w.stop()
    if done is None:
        raise RuntimeError(f"{kind}: not all {n} results within {timeout:.0f} s\n{w.tail()}")
    check_sample(r, jobs)
    r.flushdb()
    return {
        "kind": kind, "concurrency": concurrency, "n": n, "enqueue_s": enqueue_s,
        "ready_to_done_s": done - ready, "spawn_to_done_s": done - w.spawned,
        "rate": n / (done - ready), "idle_rss_kib": idle_rss, "busy_rss_kib": busy_rss, "exit": code,
    }


def default_swift_bin() -> Path:
    if os.environ.get("SWIFT_CELERY_BIN"):
        return Path(os.environ["SWIFT_CELERY_BIN"])
    release = ROOT / ".build" / "release" / "swift-celery"
    return release if release.exists() else ROOT / ".build" / "debug" / "swift-celery"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"), required="BENCH_REDIS_URL" not in os.environ)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--python-concurrency", type=int, default=2)
    p.add_argument("--swift-concurrency", type=int, default=64)
    p.add_argument("--swift-bin", type=Path, default=default_swift_bin())
    p.add_argument("--only", choices=["python", "swift"])
    p.add_argument("--timeout", type=float, default=600)
    a = p.parse_args()

    results = []
    if a.only in (None, "python"):
        results.append(run("python", a.redis_url, a.n, a.python_concurrency, None, a.timeout))
    if a.only in (None, "swift"):
        if not a.swift_bin.exists():
            print(f"swift-celery binary not found at {a.swift_bin}; skipping the Swift worker", file=sys.stderr)
        else:
            results.append(run("swift", a.redis_url, a.n, a.swift_concurrency, a.swift_bin, a.timeout))

    names = {"python": "Python Celery 5.7 (prefork)", "swift": "swift-celery"}
    print(f"\n{a.n} `tasks.add` messages pre-enqueued on one Redis; time from the worker's ready line until "
          f"all {a.n} results are stored (enqueue not counted).\n")
    print("| worker | -c | tasks/s | ready→done (s) | spawn→done (s) | idle RSS (MiB) | busy RSS (MiB) | SIGTERM exit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for res in results:
        print(f"| {names[res['kind']]} | {res['concurrency']} | {res['rate']:,.0f} | {res['ready_to_done_s']:.2f} | "
              f"{res['spawn_to_done_s']:.2f} | {res['idle_rss_kib'] / 1024:.1f} | {res['busy_rss_kib'] / 1024:.1f} | "
              f"{res['exit']} |")
    by = {res["kind"]: res for res in results}
    if "python" in by and "swift" in by:
        print(f"\nswift-celery / Python Celery throughput: **{by['swift']['rate'] / by['python']['rate']:.1f}×**; "
              f"idle RSS {by['swift']['idle_rss_kib'] / 1024:.1f} MiB vs {by['python']['idle_rss_kib'] / 1024:.1f} MiB "
              "(Python: main process + pool children).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
