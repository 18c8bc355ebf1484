"""Soak run: mixed load on a swift-celery worker while its Redis (AOF, fsync always) is restarted periodically.

Run through Benchmarks/soak.sh, which picks the binary and the Python environment:

    Benchmarks/soak.sh [SECONDS] [--restart-every S] [--rate N]      (default 3600 s, a restart every 300 s)
    Benchmarks/soak.sh 60                                            (the CI mode: a restart every 15 s)

It starts its own redis-server on a free port (appendonly yes, appendfsync always, data in a temporary directory)
and one worker (-c 16), then for SECONDS pushes tasks at about N per second (raw kombu envelopes, as Celery writes
them; a push counts as sent only when Redis acknowledged it): tasks.add, tasks.sleep(0.05), tasks.fail,
tasks.identity with a 10 KB string, tasks.add with a 2 s countdown, and tasks.flaky(2) (two retries). Every
--restart-every seconds Redis goes down, alternately by SIGKILL and by SHUTDOWN, and comes back on the same port
and data after a second. It samples the worker's RSS and open file descriptors every 2 s.

At the end it waits for every sent task's result and reports: tasks sent and completed, the RSS slope (least
squares over the samples after the first fifth of the run), RSS and fd counts at start and end. Exit status 1 if
any sent task never got a result, if the fd count grew by more than 8, or if RSS grew by more than
max(32 MiB, 50 %) over the run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "Interop"))

import redis  # noqa: E402
from interop_helpers import encode, envelope  # noqa: E402

TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, port: int, directory: str):
        self.port, self.directory, self.proc = port, directory, None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.directory,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self, hard: bool):
        if self.proc is None:
            return
        if hard:
            self.proc.kill()
        else:
            try:
                redis.Redis(port=self.port, socket_timeout=5).shutdown(nosave=False)
            except redis.exceptions.RedisError:
                pass  # SHUTDOWN closes the connection
        self.proc.wait(30)
        self.proc = None


def sample(pid: int):
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def slope(points):
    """Least-squares slope of (t, y)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 0.0 if var == 0 else sum((t - mean_t) * (y - mean_y) for t, y in points) / var


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seconds", type=float, nargs="?", default=3600)
    parser.add_argument("--restart-every", type=float, default=None,
                        help="seconds between Redis restarts (default 300, or 15 for runs under 5 minutes)")
    parser.add_argument("--rate", type=float, default=100, help="tasks pushed per second")
    parser.add_argument("--visibility-timeout", type=float, default=3600,
                        help="the worker's --visibility-timeout (seconds; default the worker's own)")
    parser.add_argument("--binary", default=os.environ.get("SWIFT_CELERY_BIN", ""))
    args = parser.parse_args()
    # SIGTERM ends the run like Ctrl-C, so the worker and redis-server are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    restart_every = args.restart_every or (300 if args.seconds >= 300 else 15)
    binary = args.binary or next(str(p) for p in (ROOT / ".build/release/swift-celery",
                                                   ROOT / ".build/debug/swift-celery") if p.exists())

    directory = tempfile.mkdtemp(prefix="swift-celery-soak.")
    port = free_port()
    server = RedisServer(port, directory)
    server.start()
    url = f"redis://127.0.0.1:{port}/0"
    queue = "soak"
    log_path = Path(directory) / "worker.log"
    log = open(log_path, "w")
    # A pop whose reply is lost with the connection (Redis killed mid-reply) leaves its messages recorded in
    # `unacked`; the worker gives them back once Redis is back, without waiting for the visibility timeout.
    worker = subprocess.Popen([binary, "worker", "--broker", url, "-Q", queue, "-c", "16", "-n", "soak@localhost",
                               "--visibility-timeout", str(args.visibility_timeout)],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=1)
    rng = random.Random(7)
    sent: list[str] = []
    samples: list[tuple[float, int, int]] = []
    restarts = 0
    push_failures = 0
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            try:
                rss, fds = sample(worker.pid)
                samples.append((time.monotonic() - started, rss, fds))
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                return
            stop.wait(2)

    def message():
        kind = rng.random()
        if kind < 0.45:
            env = envelope("tasks.add", (rng.randrange(1000), 1), queue=queue)
        elif kind < 0.6:
            env = envelope("tasks.sleep", (0.05,), queue=queue)
        elif kind < 0.7:
            env = envelope("tasks.fail", ("soak",), queue=queue)
        elif kind < 0.8:
            env = envelope("tasks.identity", ("x" * 10_000,), queue=queue)
        elif kind < 0.9:
            env = envelope("tasks.add", (1, 2), queue=queue)
            env["headers"]["eta"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 2))
        else:
            env = envelope("tasks.flaky", (2,), queue=queue)
        return env

    try:
        deadline = time.monotonic() + 60
        while "worker ready" not in log_path.read_text():
            if worker.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(), file=sys.stderr)
                raise RuntimeError("the worker did not start")
            time.sleep(0.1)
        started = time.monotonic()
        threading.Thread(target=sampler, daemon=True).start()
        next_restart = restart_every
        interval = 1.0 / args.rate
        next_push = started
        while (now := time.monotonic()) - started < args.seconds:
            if now - started >= next_restart:
                restarts += 1
                server.stop(hard=restarts % 2 == 1)
                time.sleep(1.0)
                server.start()
                next_restart += restart_every
                continue
            env = message()
            try:
                client.lpush(queue, encode(env))
                sent.append(env["headers"]["id"])
            except redis.exceptions.RedisError:
                push_failures += 1  # not sent; a client would retry
            next_push += interval
            delay = next_push - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_push = time.monotonic()
        run_seconds = time.monotonic() - started

        # Every sent task must end with a stored state.
        missing = list(sent)
        drain_deadline = time.monotonic() + 120 + (2 * args.visibility_timeout if args.visibility_timeout <= 60 else 0)
        while missing and time.monotonic() < drain_deadline:
            try:
                pipe = client.pipeline(transaction=False)
                for task_id in missing:
                    pipe.get(f"celery-task-meta-{task_id}")
                missing = [t for t, raw in zip(missing, pipe.execute())
                           if not raw or json.loads(raw).get("status") not in TERMINAL]
            except redis.exceptions.RedisError:
                pass
            if missing:
                time.sleep(1)
        time.sleep(2.5)  # one more sample after the drain
        stop.set()
        alive = worker.poll() is None
    finally:
        stop.set()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        server.stop(hard=False)

    steady = [(t, rss) for t, rss, _ in samples if t >= run_seconds / 5]
    rss_slope = slope(steady) * 3600 / 2**20  # MiB per hour
    first, last = samples[0], samples[-1]
    peak_fds = max(fds for _, _, fds in samples)
    print(f"soak: {run_seconds:.0f} s, {restarts} Redis restarts (every {restart_every:.0f} s, alternately kill -9 "
          f"and SHUTDOWN), {len(sent)} tasks sent ({push_failures} pushes refused while Redis was down), "
          f"{len(sent) - len(missing)} completed, {len(missing)} lost")
    print(f"soak: RSS {first[1] / 2**20:.1f} MiB at start, {last[1] / 2**20:.1f} MiB at end, "
          f"max {max(r for _, r, _ in samples) / 2**20:.1f} MiB, slope {rss_slope:+.2f} MiB/hour "
          f"over {len(steady)} samples; fds {first[2]} at start, {last[2]} at end, max {peak_fds}")
    recovered = sum("pop reply was lost" in line for line in log_path.read_text().splitlines())
    print(f"soak: {recovered} lost pop replies recovered after a restart")
    failures = []
    if not alive:
        failures.append("the worker exited during the run")
    if missing:
        failures.append(f"{len(missing)} tasks lost, e.g. {missing[:3]}")
    if last[2] > first[2] + 8:
        failures.append(f"file descriptors grew from {first[2]} to {last[2]}")
    if last[1] > first[1] + max(32 * 2**20, first[1] // 2):
        failures.append(f"RSS grew from {first[1] / 2**20:.1f} to {last[1] / 2**20:.1f} MiB")
    if failures:
        print("soak: FAILED: " + "; ".join(failures), file=sys.stderr)
        print(f"soak: worker log kept in {log_path}", file=sys.stderr)
        return 1
    shutil.rmtree(directory, ignore_errors=True)
    print("soak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
