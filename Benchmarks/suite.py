"""The benchmark suite: swift-celery against Python Celery 5.7 and against the Redis ceiling, in one run on one Redis.

    python Benchmarks/suite.py --redis-url redis://127.0.0.1:PORT/0 [--quick] [--only SECTION ...]

Benchmarks/suite.sh starts a throw-away redis-server (no persistence), builds the release binary and runs this.
Sections (all by default, in this order):

    drain     N pre-enqueued `tasks.add` with results stored and published, early ack and acks late:
              swift-celery vs Python Celery prefork -c 2 and threads -c 8 (tasks/s and ratios); swift-celery
              late ack again with --max-crashes=0 (what the crash guard's running marks cost)
    latency   enqueue → result published (the PUBLISH on celery-task-meta-<id>): p50/p99/max, one task at a time
              (--idle-fetch blmove, the default, poll and brpop), and under open-loop loads at a tenth, a quarter
              and half of the drain rate; timed over raw sockets from one thread, whose own floor is a row too,
              as are two reference workers in C (Benchmarks/reference_worker.c) making only the trips through Redis;
              the open loop again from a probe in C (Benchmarks/open_loop_probe.c), with that probe's floor
    memory    idle RSS (the image's binary also idle again after 10,000 tasks, and with --keep-pages); peak RSS
              while 1,000,000 queued tasks drain
    eta       ETA tasks: swift-celery's RSS (now and peak) with 100,000 and 1,000,000 parked in Redis, and holding
              100,000 in memory (--park-eta-after off); 100 plain tasks queued behind 30,000 countdown=3600 tasks:
              how long until all 100 have results, swift-celery vs Python Celery prefork -c 2 (and its RSS)
    startup   process start → `worker ready`, and → the first result of a task waiting in the queue
    beat      Python's `celery beat` and `swift-celery beat` with the same 10,000 entries all due together every
              30 s (Python 1 round, Swift 3): CPU, RSS, and how long each round takes to go out
    ceiling   redis-benchmark pipelined ops/s on this machine, Redis commands and Redis CPU per task (INFO
              commandstats over a drain), and the tasks/s that Redis CPU allows; and what jansson alone takes to
              parse one message (Benchmarks/jansson_floor.c), the floor of the worker's own decoding
    netlag    the drain again with 1 ms of added round-trip latency between worker and Redis (the condition
              Sidekiq publishes its figures under): Benchmarks/delay_proxy.py, 0.5 ms each way, since this
              kernel has no netem

Prints markdown tables; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import os
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker_vs_celery import (  # noqa: E402
    QUEUE, Worker, check_sample, default_swift_bin, enqueue, envelope, rss_kib, wait_all,
)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


# ---- drain ---------------------------------------------------------------------------------------------------

def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (prefork's children included), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, p in parents.items() if p == parent and child not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(member, 0.0) for member in tree)


def drain(url: str, kind: str, n: int, concurrency: int, swift_bin, flags=(), pool="prefork") -> dict:
    r = redis.Redis.from_url(url)
    r.flushdb()
    jobs = enqueue(r, n)
    w = Worker(kind, url, concurrency, swift_bin, flags=flags, pool=pool)
    ready = w.start()
    cpu_at_ready = tree_cpu_seconds(w.proc.pid)
    done = wait_all(r, [tid for tid, _, _ in jobs], timeout=max(600, n / 200))
    cpu = tree_cpu_seconds(w.proc.pid) - cpu_at_ready
    w.stop()
    if done is None:
        raise RuntimeError(f"{kind}: not all results within the timeout\n{w.tail()}")
    check_sample(r, jobs)
    r.flushdb()
    return {"rate": n / (done - ready), "seconds": done - ready, "cpu_us": cpu * 1e6 / n}


def section_drain(a) -> dict:
    rows = []
    results = {}
    configurations = [
        ("python", "prefork", a.python_concurrency, ()),
        ("python", "threads", 8, ()),
        ("swift", None, a.swift_concurrency, ()),
        ("python", "prefork", a.python_concurrency, ("--acks-late",)),
        ("swift", None, a.swift_concurrency, ("--acks-late",)),
        # What the crash guard's running marks cost (docs/guarantees.md): the same drain without them.
        ("swift", None, a.swift_concurrency, ("--acks-late", "--max-crashes=0")),
    ]
    for kind, pool, c, flags in configurations:
        n = a.python_n if kind == "python" else a.n
        res = drain(a.redis_url, kind, n, c, a.swift_bin, flags=flags, pool=pool or "prefork")
        label = f"Python Celery 5.7 ({pool} -c {c})" if kind == "python" else f"swift-celery (-c {c})"
        ack = "late" if "--acks-late" in flags else "early"
        if "--max-crashes=0" in flags:
            ack += ", no crash guard"
        results[(kind, pool, ack)] = res["rate"]
        rows.append((label, ack, n, res["rate"], res["cpu_us"]))
        print(f"  drain {label} acks {ack}: {res['rate']:,.0f} tasks/s", file=sys.stderr)
    print("\n### Drain throughput\n")
    print("`tasks.add` messages pre-enqueued, results stored and published; ready line → last result. CPU per task: "
          "the worker's processes (user + system, /proc) over the same span; it varies less between runs than "
          "tasks/s.\n")
    print("| worker | ack | tasks | tasks/s | swift-celery × | worker CPU per task (µs) |")
    print("|---|---|---:|---:|---:|---:|")
    for label, ack, n, rate, cpu_us in rows:
        swift = results.get(("swift", None, ack))
        ratio = f"{swift / rate:.1f}×" if swift and not label.startswith("swift") else ""
        print(f"| {label} | {ack} | {n:,} | {rate:,.0f} | {ratio} | {cpu_us:,.1f} |")
    return results


# ---- latency -------------------------------------------------------------------------------------------------

def parse_resp(data: bytes, at: int = 0):
    """One RESP2 reply from `data[at:]`: (reply, position after it), or None when it is not complete yet."""
    line_end = data.find(b"\r\n", at)
    if line_end < 0:
        return None
    kind, rest = data[at:at + 1], data[at + 1:line_end]
    at = line_end + 2
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind in (b"+", b":"):
        return rest, at
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None, at
        if len(data) < at + size + 2:
            return None
        return data[at:at + size], at + size + 2
    if kind == b"*":
        items = []
        for _ in range(int(rest)):
            parsed = parse_resp(data, at)
            if parsed is None:
                return None
            item, at = parsed
            items.append(item)
        return items, at
    raise RuntimeError(f"unexpected RESP reply {data[at - 2 - len(rest) - 1:line_end]!r}")


class RespConnection:
    """A raw Redis connection: send commands, read replies, never more than the caller asks for."""

    def __init__(self, options: dict):
        self.socket = socket.create_connection((options.get("host") or "127.0.0.1", options.get("port") or 6379),
                                               timeout=30)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        if options.get("password"):
            auth = [options["username"], options["password"]] if options.get("username") else [options["password"]]
            self.call("AUTH", *auth)
        if options.get("db"):
            self.call("SELECT", options["db"])

    @staticmethod
    def command(*parts) -> bytes:
        encoded = [part if isinstance(part, bytes) else str(part).encode() for part in parts]
        return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in encoded)

    def send(self, data: bytes):
        self.socket.sendall(data)

    def receive(self):
        chunk = self.socket.recv(1 << 20)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        self.buffer += chunk

    def available(self) -> list:
        """Every complete reply already received."""
        replies, at = [], 0
        while (parsed := parse_resp(self.buffer, at)) is not None:
            reply, at = parsed
            replies.append(reply)
        self.buffer = self.buffer[at:]
        return replies

    def reply(self):
        while (parsed := parse_resp(self.buffer)) is None:
            self.receive()
        reply, at = parsed
        self.buffer = self.buffer[at:]
        return reply

    def call(self, *parts):
        self.send(self.command(*parts))
        return self.reply()

    def close(self):
        self.socket.close()


class SocketProbe:
    """Latency timed from one thread over raw sockets: LPUSH on one connection, PSUBSCRIBE `celery-task-meta-*` on
    another, and reads of the subscriber until the task's PUBLISH arrives. No listener thread and no client library
    sits between the two timestamps; `harness_floor` measures what this way of timing costs by itself."""

    def __init__(self, url: str):
        options = redis.connection.parse_url(url)
        self.push = RespConnection(options)
        self.sub = RespConnection(options)
        self.sub.call("PSUBSCRIBE", "celery-task-meta-*")

    @staticmethod
    def task_id(message) -> str | None:
        """The task id of a `pmessage` push, else None."""
        if isinstance(message, list) and len(message) == 4 and message[0] == b"pmessage":
            return message[2].decode()[len("celery-task-meta-"):]
        return None

    def round_trip(self, task_id: str, message: bytes, queue: str = QUEUE, publish_itself: bool = False) -> float:
        """Milliseconds from sending the LPUSH to reading the PUBLISH for `task_id`. With `publish_itself` the
        probe sends that PUBLISH right behind its LPUSH (no worker): the floor of this way of measuring."""
        request = RespConnection.command("LPUSH", queue, message)
        if publish_itself:
            request += RespConnection.command("PUBLISH", f"celery-task-meta-{task_id}", b"{}")
        sent = time.perf_counter()
        self.push.send(request)
        while self.task_id(self.sub.reply()) != task_id:
            pass
        arrived = time.perf_counter()
        for _ in range(2 if publish_itself else 1):
            self.push.reply()
        return (arrived - sent) * 1000

    def open_loop(self, rate: float, seconds: float, settle: float = 30) -> tuple[list[float], float, int]:
        """Sends LPUSH batches every millisecond at `rate` tasks/s for `seconds`, reading results in between;
        returns every task's latency in ms, the rate achieved and how many results never came. The messages are
        made before the clock starts: the probe shares the machine's cores with the worker and Redis, and making
        kombu's envelope in Python costs it more than the worker spends running the task."""
        ids = [str(uuid.uuid4()) for _ in range(int(rate * seconds) + 1)]
        commands = [RespConnection.command("LPUSH", QUEUE, envelope(task_id, [1, 2])) for task_id in ids]
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        start = time.perf_counter()
        sent = 0
        while True:
            now = time.perf_counter()
            elapsed = now - start
            if elapsed < seconds:
                due = min(int(elapsed * rate), len(ids)) - sent
                if due > 0:
                    for task_id in ids[sent:sent + due]:
                        sent_at[task_id] = now
                    self.push.send(b"".join(commands[sent:sent + due]))
                    sent += due
                wait = 0.001
            elif len(latencies) == len(sent_at) or elapsed > seconds + settle:
                break
            else:
                wait = 0.05
            readable, _, _ = select.select([self.sub.socket, self.push.socket], [], [], wait)
            arrived = time.perf_counter()
            if self.sub.socket in readable:
                self.sub.receive()
                for message in self.sub.available():
                    task_id = self.task_id(message)
                    if task_id in sent_at:
                        latencies.append((arrived - sent_at[task_id]) * 1000)
            if self.push.socket in readable:
                self.push.receive()
                self.push.available()  # the LPUSH replies: read and dropped
        achieved = sent / seconds
        return latencies, achieved, len(sent_at) - len(latencies)

    def close(self):
        self.push.close()
        self.sub.close()


def idle_gap(back_to_back: bool) -> None:
    """The pause before each single task: 5–30 ms, as a real trickle has it (so polling backs off as it would, and
    the machine's idle CPUs go to sleep), or none (the next task follows the last result at once)."""
    if not back_to_back:
        time.sleep(random.uniform(0.005, 0.03))


def harness_floor(url: str, count: int, back_to_back: bool = False) -> list[float]:
    """The probe against itself: LPUSH then PUBLISH from the probe, no worker running."""
    probe = SocketProbe(url)
    try:
        values = []
        for i in range(count):
            task_id = str(uuid.uuid4())
            idle_gap(back_to_back)
            values.append(probe.round_trip(task_id, envelope(task_id, [i, i]), queue="suite-floor",
                                           publish_itself=True))
        return values
    finally:
        probe.push.call("DEL", "suite-floor")
        probe.close()


_compiled: dict[str, Path | None] = {}


def c_compiler() -> str | None:
    """The system's C compiler the suite builds its C yardsticks with, or None."""
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def compiled(source: str, *libraries: str) -> Path | None:
    """Benchmarks/<source> compiled with the system's C compiler (once per run), or None without a compiler or
    when it does not compile (the compiler's message goes to stderr)."""
    if source not in _compiled:
        _compiled[source] = None
        compiler = c_compiler()
        if compiler is None:
            print(f"  no C compiler: the rows of {source} are left out", file=sys.stderr)
            return None
        directory = tempfile.mkdtemp(prefix="suite-c-")
        atexit.register(shutil.rmtree, directory, True)
        out = Path(directory) / Path(source).stem
        built = subprocess.run([compiler, "-O2", "-o", str(out), str(Path(__file__).with_name(source)), *libraries])
        if built.returncode != 0:
            print(f"  {source} did not compile: its rows are left out", file=sys.stderr)
            return None
        _compiled[source] = out
    return _compiled[source]


def reference_one_at_a_time(url: str, mode: str, count: int, back_to_back: bool = False) -> list[float] | None:
    """The probe against Benchmarks/reference_worker.c (`brpop`: two trips through Redis per task, the least any
    worker makes; `blmove`: the three swift-celery makes), one task at a time as `one_at_a_time` sends them."""
    binary = compiled("reference_worker.c")
    if binary is None:
        return None
    r = redis.Redis.from_url(url)
    r.flushdb()
    options = redis.connection.parse_url(url)
    command = [str(binary), options.get("host") or "127.0.0.1", str(options.get("port") or 6379),
               str(options.get("db") or 0), QUEUE, mode]
    if options.get("password"):
        command.append(options["password"])
        if options.get("username"):
            command.append(options["username"])
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if worker.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"reference worker did not start: {worker.stderr.read().decode(errors='replace')}")
        return single_tasks(url, count, back_to_back)
    finally:
        worker.kill()
        worker.wait()
        r.flushdb()


def single_tasks(url: str, count: int, back_to_back: bool) -> list[float]:
    """Latencies of `count` tasks sent one at a time to whatever worker consumes QUEUE."""
    probe = SocketProbe(url)
    try:
        latencies = []
        for i in range(count):
            task_id = str(uuid.uuid4())
            idle_gap(back_to_back)
            latencies.append(probe.round_trip(task_id, envelope(task_id, [i, i])))
        return latencies
    finally:
        probe.close()


def one_at_a_time(url: str, swift_bin, flags, count: int, back_to_back: bool = False) -> list[float]:
    r = redis.Redis.from_url(url)
    r.flushdb()
    w = Worker("swift", url, 16, swift_bin, flags=flags)
    w.start()
    try:
        return single_tasks(url, count, back_to_back)
    finally:
        w.stop()
        r.flushdb()


def c_open_loop(url: str, rate: float, seconds: float, itself: bool = False, settle: float = 30,
                queue: str | None = None) -> tuple[list[float], float, int] | None:
    """`SocketProbe.open_loop` done by Benchmarks/open_loop_probe.c (None without a C compiler): the same batches
    every millisecond, the same timestamps, at a small share of the CPU the Python probe takes. With `itself` no
    worker takes part: the probe PUBLISHes each task's channel right behind its LPUSH and RPOPs the message again.
    Returns the latencies in ms, the rate achieved and how many results never came."""
    binary = compiled("open_loop_probe.c")
    if binary is None:
        return None
    options = redis.connection.parse_url(url)
    queue = queue or ("suite-floor" if itself else QUEUE)
    with tempfile.NamedTemporaryFile(prefix="suite-open-loop-", suffix=".txt") as messages:
        for index in range(int(rate * seconds) + 1):
            # The id's last 12 hex digits are the message's line number: the probe finds its send time by it.
            task_id = f"{str(uuid.uuid4())[:24]}{index:012x}"
            messages.write(task_id.encode() + b" " + envelope(task_id, [1, 2]) + b"\n")
        messages.flush()
        command = [str(binary), options.get("host") or "127.0.0.1", str(options.get("port") or 6379),
                   str(options.get("db") or 0), queue, str(rate), str(seconds), str(settle), messages.name,
                   "itself" if itself else "worker"]
        if options.get("password"):
            command.append(options["password"])
            if options.get("username"):
                command.append(options["username"])
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        finally:
            if itself:
                redis.Redis.from_url(url).delete(queue)
    if done.returncode != 0:
        raise RuntimeError(f"open_loop_probe exited with {done.returncode}: {done.stderr[-400:]}")
    lines = done.stdout.split()
    if len(lines) < 2 or lines[-2] != "sent":
        raise RuntimeError(f"open_loop_probe printed no count: {done.stdout[-200:]!r} {done.stderr[-400:]!r}")
    sent = int(lines[-1])
    latencies = [float(value) for value in lines[:-2]]
    return latencies, sent / seconds, sent - len(latencies)


def under_load(url: str, swift_bin, rate: float, seconds: float,
               probe_in_c: bool = False) -> tuple[list[float], float] | None:
    """Open loop: batches every millisecond at `rate` tasks/s; latency of every task. `probe_in_c`: sent and timed
    by Benchmarks/open_loop_probe.c instead of the Python probe (None without a C compiler)."""
    if probe_in_c and compiled("open_loop_probe.c") is None:
        return None
    r = redis.Redis.from_url(url)
    r.flushdb()
    w = Worker("swift", url, 64, swift_bin)
    w.start()
    try:
        if probe_in_c:
            latencies, achieved, missing = c_open_loop(url, rate, seconds)
        else:
            probe = SocketProbe(url)
            try:
                latencies, achieved, missing = probe.open_loop(rate, seconds)
            finally:
                probe.close()
    finally:
        w.stop()
        r.flushdb()
    if missing:
        print(f"  under load: {missing} results missing", file=sys.stderr)
    return latencies, achieved


def section_latency(a, peak: float | None) -> None:
    floor = harness_floor(a.redis_url, a.latency_count)
    rows = [("the probe alone: its LPUSH and a PUBLISH of its own, no worker (the floor)", len(floor), floor)]
    # What the trips through Redis cost by themselves on this machine: a C program that makes them and nothing else.
    for mode, label in (("brpop", "reference, two trips (BRPOP; SETEX + PUBLISH): the least any worker makes"),
                        ("blmove", "reference, swift-celery's three trips (BLMOVE; pop + record; store + ack)")):
        values = reference_one_at_a_time(a.redis_url, mode, a.latency_count)
        if values:
            rows.append((label, len(values), values))
    for flags, label in (((), "one at a time, --idle-fetch blmove (default)"),
                         (("--idle-fetch", "poll"), "one at a time, --idle-fetch poll"),
                         (("--idle-fetch", "brpop"), "one at a time, --idle-fetch brpop")):
        values = one_at_a_time(a.redis_url, a.swift_bin, flags, a.latency_count)
        rows.append((label, len(values), values))
    # Without the idle gap the machine's CPUs stay awake between tasks: the difference from the rows above is what
    # waking them costs on this machine, for the probe and Redis as much as for the worker.
    awake = harness_floor(a.redis_url, a.latency_count, back_to_back=True)
    rows.append(("the probe alone, back to back (no idle gap)", len(awake), awake))
    for mode, label in (("brpop", "reference, two trips, back to back"),
                        ("blmove", "reference, swift-celery's three trips, back to back")):
        values = reference_one_at_a_time(a.redis_url, mode, a.latency_count, back_to_back=True)
        if values:
            rows.append((label, len(values), values))
    values = one_at_a_time(a.redis_url, a.swift_bin, (), a.latency_count, back_to_back=True)
    rows.append(("one at a time, back to back (no idle gap), default", len(values), values))
    if peak:
        # The Python probe shares the 2 cores with the worker and Redis: near half the drain rate it takes most
        # of a core itself, so lighter loads are measured too.
        for share, name in ((0.1, "a tenth of"), (0.25, "a quarter of"), (0.5, "half")):
            values, achieved = under_load(a.redis_url, a.swift_bin, peak * share, a.load_seconds)
            rows.append((f"open loop at {name} the drain rate ({achieved:,.0f} tasks/s offered)", len(values),
                         values))
        # The same loads sent and timed by Benchmarks/open_loop_probe.c: the same batches and timestamps at a
        # fraction of the CPU, which the worker and Redis then have (rows left out without a C compiler).
        floor_at_half = c_open_loop(a.redis_url, peak * 0.5, a.load_seconds, itself=True)
        if floor_at_half:
            values, achieved, _ = floor_at_half
            rows.append((f"the C probe alone at half the drain rate ({achieved:,.0f} tasks/s): its LPUSH, a PUBLISH "
                         "of its own and an RPOP, no worker", len(values), values))
            for share, name in ((0.1, "a tenth of"), (0.25, "a quarter of"), (0.5, "half")):
                measured = under_load(a.redis_url, a.swift_bin, peak * share, a.load_seconds, probe_in_c=True)
                if measured:
                    values, achieved = measured
                    rows.append((f"open loop at {name} the drain rate ({achieved:,.0f} tasks/s offered), C probe",
                                 len(values), values))
    print("\n### Latency: enqueue → result published\n")
    print("LPUSH of one message → the worker's PUBLISH on `celery-task-meta-<id>` read by a subscriber. One "
          "Python thread times both ends over raw sockets (`SocketProbe`); the first row is that probe's own "
          "cost. The reference rows are Benchmarks/reference_worker.c, a C program that makes a worker's trips "
          "through Redis and does nothing else. One at a time, each task follows an idle gap of 5–30 ms, or none "
          "(back to back). The open loop sends batches every millisecond; the C probe rows send and time them the "
          "same way from Benchmarks/open_loop_probe.c, which leaves the two cores to the worker and Redis.\n")
    print("| load | tasks | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|")
    for label, n, values in rows:
        print(f"| {label} | {n:,} | {percentile(values, 50):.2f} | {percentile(values, 99):.2f} | "
              f"{max(values):.2f} |")


# ---- memory --------------------------------------------------------------------------------------------------

def sample_peak(pid: int, stop: threading.Event, out: list[int]):
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_kib(pid))
        time.sleep(0.1)
    out.append(peak)


def anonymous_and_pss_kib(pid: int) -> tuple[int, int]:
    """RssAnon (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) of one process, in KiB. Most of an idle
    worker's RSS is code mapped from files (its own binary, shared libraries): pages the kernel shares and can
    drop, which RSS counts in full."""
    values = {}
    for path, key in ((f"/proc/{pid}/status", "RssAnon:"), (f"/proc/{pid}/smaps_rollup", "Pss:")):
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    values[key] = int(line.split()[1])
    return values.get("RssAnon:", 0), values.get("Pss:", 0)


def section_memory(a) -> None:
    r = redis.Redis.from_url(a.redis_url)
    rows = []
    for kind, c in (("python", a.python_concurrency), ("swift", a.swift_concurrency)):
        r.flushdb()
        w = Worker(kind, a.redis_url, c, a.swift_bin if kind == "swift" else None)
        w.start()
        time.sleep(2)
        rows.append((f"idle, {'Python Celery prefork -c 2 (all processes)' if kind == 'python' else 'swift-celery'}",
                     rss_kib(w.proc.pid)))
        if kind == "swift":
            anonymous, pss = anonymous_and_pss_kib(w.proc.pid)
            rows.append(("idle, swift-celery: anonymous memory only (heap, stacks: RssAnon)", anonymous))
            rows.append(("idle, swift-celery: proportional set size (shared code pages divided among users: Pss)",
                         pss))
        w.stop()
    # The binary the container image ships (compose/build-release.sh: Swift runtime linked in, packed relocations).
    # A second after it is ready, and after 30 s without a message, the worker gives back its executable's pages
    # (ExecutablePages): measured with and without, and idle again after it has run tasks.
    if a.image_bin and a.image_bin.exists():
        r.flushdb()
        w = Worker("swift", a.redis_url, a.swift_concurrency, a.image_bin)
        w.start()
        time.sleep(2)
        anonymous, _ = anonymous_and_pss_kib(w.proc.pid)
        rows.append(("idle, swift-celery as the image ships it (compose/build-release.sh)", rss_kib(w.proc.pid)))
        rows.append(("idle, swift-celery as the image ships it: anonymous memory only", anonymous))
        jobs = enqueue(r, a.idle_after_tasks, consumed=True)
        if wait_all(r, [tid for tid, _, _ in jobs], timeout=600) is None:
            raise RuntimeError("tasks before the second idle measurement did not finish")
        time.sleep(2)
        rows.append((f"idle 2 s after {a.idle_after_tasks:,} tasks, as the image ships it", rss_kib(w.proc.pid)))
        # The worker releases again after 30 s without a message (checked every 30 s).
        time.sleep(63)
        rows.append((f"idle 65 s after {a.idle_after_tasks:,} tasks (released again), as the image ships it",
                     rss_kib(w.proc.pid)))
        w.stop()
        r.flushdb()
        w = Worker("swift", a.redis_url, a.swift_concurrency, a.image_bin, flags=("--keep-pages",))
        w.start()
        time.sleep(2)
        rows.append(("idle, as the image ships it, pages kept (--keep-pages)", rss_kib(w.proc.pid)))
        w.stop()

    # Peak while a large backlog drains.
    r.flushdb()
    t0 = time.monotonic()
    jobs = enqueue(r, a.backlog)
    print(f"  enqueued {a.backlog:,} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    w = Worker("swift", a.redis_url, a.swift_concurrency, a.swift_bin)
    stop, peak = threading.Event(), []
    w.start()
    sampler = threading.Thread(target=sample_peak, args=(w.proc.pid, stop, peak))
    sampler.start()
    done = wait_all(r, [tid for tid, _, _ in jobs], timeout=3600)
    stop.set()
    sampler.join()
    w.stop()
    if done is None:
        raise RuntimeError("backlog did not drain")
    rows.append((f"peak while {a.backlog:,} queued tasks drain, swift-celery", peak[0]))

    print("\n### Memory (RSS)\n")
    print("| state | RSS (MiB) |")
    print("|---|---:|")
    for label, kib in rows:
        print(f"| {label} | {mib(kib)} |")


# ---- ETA tasks -----------------------------------------------------------------------------------------------

def peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def eta_in(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + seconds))


def section_eta(a) -> None:
    r = redis.Redis.from_url(a.redis_url)
    rows = []
    parked_key = f"swift-celery:eta:{QUEUE}"
    for count in (a.held, a.parked):
        r.flushdb()
        t0 = time.monotonic()
        enqueue(r, count, eta=eta_in(86_400))
        print(f"  enqueued {count:,} ETA tasks in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        w = Worker("swift", a.redis_url, a.swift_concurrency, a.swift_bin)
        w.start()
        t0 = time.monotonic()
        deadline = t0 + 3600
        while r.zcard(parked_key) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        parked_in = time.monotonic() - t0
        if r.zcard(parked_key) < count:
            raise RuntimeError(f"only {r.zcard(parked_key):,} of {count:,} ETA tasks parked")
        time.sleep(1)
        rows.append((f"{count:,} ETA tasks parked in Redis ({count / parked_in:,.0f} parked/s): RSS now / peak",
                     f"{mib(rss_kib(w.proc.pid))} / {mib(peak_kib(w.proc.pid))}", ""))
        w.stop()
    # Held in memory, as Celery holds them (and as swift-celery did before parking).
    r.flushdb()
    enqueue(r, a.held, eta=eta_in(86_400))
    w = Worker("swift", a.redis_url, a.swift_concurrency, a.swift_bin,
               flags=("--park-eta-after", "off", "--max-held", str(a.held + 1000)))
    w.start()
    deadline = time.monotonic() + 600
    while r.llen(QUEUE) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    rows.append((f"{a.held:,} ETA tasks held in memory (--park-eta-after off): RSS", mib(rss_kib(w.proc.pid)), ""))
    w.stop()

    # Plain tasks behind an ETA flood: the worker runs first, the flood arrives, then the plain tasks.
    flood_rows = []
    for kind, c in (("python", a.python_concurrency), ("swift", a.swift_concurrency)):
        r.flushdb()
        w = Worker(kind, a.redis_url, c, a.swift_bin if kind == "swift" else None)
        w.start()
        enqueue(r, a.eta_flood, eta=eta_in(3600), consumed=True)
        t0 = time.monotonic()
        jobs = enqueue(r, 100, consumed=True)
        done = wait_all(r, [tid for tid, _, _ in jobs], timeout=120)
        elapsed = time.monotonic() - t0
        time.sleep(1)
        rss = rss_kib(w.proc.pid)
        w.stop()
        flood_rows.append((kind, f"{elapsed:.2f}" if done is not None else f"not done in 120 s", mib(rss)))
    r.flushdb()

    print("\n### ETA tasks\n")
    print("| state | swift-celery RSS (MiB) |")
    print("|---|---:|")
    for label, value, _ in rows:
        print(f"| {label} | {value} |")
    print(f"\n100 plain `tasks.add` sent after {a.eta_flood:,} tasks with countdown=3600 (the worker already "
          "consuming): seconds until all 100 have results, and the worker's RSS then.\n")
    print("| worker | seconds | RSS (MiB) |")
    print("|---|---:|---:|")
    for kind, seconds, rss in flood_rows:
        label = "Python Celery prefork -c 2 (all processes)" if kind == "python" else "swift-celery"
        print(f"| {label} | {seconds} | {rss} |")


# ---- start-up ------------------------------------------------------------------------------------------------

def section_startup(a) -> None:
    r = redis.Redis.from_url(a.redis_url)
    ready_ms, first_ms = [], []
    for _ in range(a.startup_runs):
        r.flushdb()
        task_id = str(uuid.uuid4())
        r.sadd("_kombu.binding.celery", f"{QUEUE}\x06\x16\x06\x16{QUEUE}")
        r.lpush(QUEUE, envelope(task_id, [1, 1]))
        w = Worker("swift", a.redis_url, 16, a.swift_bin)
        ready = w.start()
        done = wait_all(r, [task_id], timeout=30)
        w.stop()
        if done is None:
            raise RuntimeError("no result")
        ready_ms.append((ready - w.spawned) * 1000)
        first_ms.append((done - w.spawned) * 1000)
    r.flushdb()
    print("\n### Start-up\n")
    print(f"{a.startup_runs} starts; one task waiting in the queue. Times from spawning the process (the "
          "`worker ready` line is read from its log, polled every 20 ms; the result key every 10 ms).\n")
    print("| to | median (ms) | min (ms) | max (ms) |")
    print("|---|---:|---:|---:|")
    for label, values in (("`worker ready`", ready_ms), ("first result stored", first_ms)):
        print(f"| {label} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")


# ---- beat ----------------------------------------------------------------------------------------------------

PYTHON_BEAT_APP = """
from celery import Celery
import json, os
app = Celery("beatbench", broker=os.environ["BEAT_BENCH_URL"])
app.conf.beat_schedule = {
    entry["name"]: {"task": entry["task"], "schedule": entry["schedule"], "args": tuple(entry["args"]),
                    "options": entry["options"]}
    for entry in json.load(open(os.environ["BEAT_BENCH_SCHEDULE"]))["entries"]
}
"""


def beat_run(a, kind: str, rounds: int, workdir: Path) -> dict:
    """One beat (Python Celery's `celery beat` or `swift-celery beat`) with the same entries, all falling due at
    the same instant each interval (one interval after start, in both): counts the messages in the queues every
    5 ms, and per round takes the time from its first message to its last (how late the last entry of the round
    went out, since the first goes out at its due time)."""
    r = redis.Redis.from_url(a.redis_url)
    r.flushdb()
    n = a.beat_entries
    queues = [f"bench{i}" for i in range(10)]
    schedule = workdir / "beat.json"
    schedule.write_text(json.dumps({"entries": [
        {"name": f"e{i}", "task": "tasks.add", "schedule": a.beat_interval, "args": [i, 1],
         "options": {"queue": queues[i % 10]}} for i in range(n)]}))
    log = open(workdir / f"{kind}-beat.log", "w")
    if kind == "python":
        (workdir / "beatbench.py").write_text(PYTHON_BEAT_APP)
        env = dict(os.environ, BEAT_BENCH_URL=a.redis_url, BEAT_BENCH_SCHEDULE=str(schedule),
                   PYTHONPATH=str(workdir))
        command = [sys.executable, "-m", "celery", "-A", "beatbench", "beat", "-l", "warning",
                   "-s", str(workdir / "celerybeat-schedule"), "--pidfile="]
    else:
        env = dict(os.environ)
        command = [str(a.swift_bin.resolve()), "beat", "--schedule", str(schedule), "--broker", a.redis_url,
                   "--loglevel", "warning"]
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    first, last = [None] * rounds, [None] * rounds
    deadline = time.monotonic() + rounds * a.beat_interval + a.beat_timeout
    try:
        while last[-1] is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (workdir / f"{kind}-beat.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{kind} beat: {sum(l is not None for l in last)} of {rounds} rounds sent; "
                                   f"its log ends:\n{tail}")
            pipe = r.pipeline(transaction=False)
            for q in queues:
                pipe.llen(q)
            count, now = sum(pipe.execute()), time.monotonic()
            for k in range(rounds):
                if first[k] is None and count > k * n:
                    first[k] = now
                if last[k] is None and count >= (k + 1) * n:
                    last[k] = now
            time.sleep(0.005)
        cpu = tree_cpu_seconds(proc.pid)
        rss = rss_kib(proc.pid)
        with open(f"/proc/{proc.pid}/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    sent = sum(r.llen(q) for q in queues)
    message = json.loads(r.lindex(queues[0], 0))
    if message["headers"]["task"] != "tasks.add" or sent < rounds * n:
        raise RuntimeError(f"{kind} beat: {sent} messages, first {message['headers']}")
    r.flushdb()
    bursts = [(l - f) * 1000 for f, l in zip(first, last)]
    return {"rounds": rounds, "sent": sent, "cpu": cpu, "rss": rss, "peak": peak, "bursts": bursts}


def section_beat(a) -> None:
    import tempfile
    results = {}
    for kind, rounds in (("python", a.beat_python_rounds), ("swift", a.beat_rounds)):
        with tempfile.TemporaryDirectory(prefix="beat-bench-") as workdir:
            results[kind] = beat_run(a, kind, rounds, Path(workdir))
        print(f"  beat {kind}: {results[kind]['cpu']:.2f} s CPU, rounds "
              f"{', '.join(f'{b:.0f}' for b in results[kind]['bursts'])} ms", file=sys.stderr)
    print(f"\n### Beat with {a.beat_entries:,} entries\n")
    print(f"Each beat has the same {a.beat_entries:,} interval entries (`tasks.add` to ten queues, every "
          f"{a.beat_interval:g} s), all due at the same instant each round. A round: from its first message in Redis to its last (queue lengths read every 5 ms), which is how late "
          "its last entry went out. CPU: the whole run, start-up included. Python: `celery beat` with its default "
          "scheduler (a shelve file), for fewer rounds: before each message it sends it compares every entry of "
          "its schedule with its previous copy, so a round of many entries takes minutes; swift-celery: `swift-celery beat` with its state in "
          "Redis.\n")
    print("| beat | rounds | messages | CPU (s) | CPU per round (s) | RSS at end (MiB) | peak RSS (MiB) | round p50 (ms) "
          "| round max (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, label in (("python", "Python Celery 5.7 `celery beat`"), ("swift", "`swift-celery beat`")):
        res = results[kind]
        print(f"| {label} | {res['rounds']} | {res['sent']:,} | {res['cpu']:.2f} | {res['cpu'] / res['rounds']:.2f} "
              f"| {mib(res['rss'])} | {mib(res['peak'])} | {statistics.median(res['bursts']):,.0f} "
              f"| {max(res['bursts']):,.0f} |")
    py, sw = results["python"], results["swift"]
    print(f"\nswift-celery beat: {(py['cpu'] / py['rounds']) / (sw['cpu'] / sw['rounds']):.1f}× less CPU per round, "
          f"{statistics.median(py['bursts']) / max(statistics.median(sw['bursts']), 1):.1f}× shorter rounds "
          f"(p50), {py['peak'] / sw['peak']:.1f}× less peak memory than Python's.")


# ---- ceiling -------------------------------------------------------------------------------------------------

def commandstats(r: redis.Redis) -> dict[str, tuple[int, float]]:
    stats = {}
    for name, value in r.info("commandstats").items():
        stats[name.removeprefix("cmdstat_")] = (int(value["calls"]), float(value["usec"]))
    return stats


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def jansson_floor(iterations: int = 100_000) -> tuple[float, int] | None:
    """Benchmarks/jansson_floor.c on the suite's own message: µs per message for the two json_loadb calls the
    worker makes (the envelope with its body emptied, then the body), and their bytes; None without a compiler."""
    binary = compiled("jansson_floor.c", "-ljansson")
    if binary is None:
        return None
    task_id = str(uuid.uuid4())
    whole = json.loads(envelope(task_id, [1, 2]))
    body = base64.b64decode(whole["body"])
    whole["body"] = ""
    with tempfile.TemporaryDirectory(prefix="suite-jansson-") as directory:
        paths = [Path(directory) / "envelope.json", Path(directory) / "body.json"]
        paths[0].write_bytes(json.dumps(whole).encode())
        paths[1].write_bytes(body)
        out = subprocess.run([str(binary), str(paths[0]), str(paths[1]), str(iterations)], capture_output=True,
                             text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def section_ceiling(a, swift_rate: float | None) -> None:
    r = redis.Redis.from_url(a.redis_url)
    port = r.connection_pool.connection_kwargs.get("port", 6379)
    bench = shutil.which("redis-benchmark")
    ops = {}
    if bench:
        out = subprocess.run([bench, "-p", str(port), "-t", "lpush,rpop,set,publish", "-n", "1000000", "-P", "16",
                              "-q", "--csv"], capture_output=True, text=True).stdout
        for line in out.splitlines()[1:]:
            cells = [c.strip('"') for c in line.split(",")]
            if len(cells) >= 2:
                ops[cells[0]] = float(cells[1])
    r.flushdb()
    r.config_resetstat()
    jobs = enqueue(r, a.n)
    before, cpu_before = commandstats(r), redis_cpu(r)
    w = Worker("swift", a.redis_url, a.swift_concurrency, a.swift_bin)
    w.start()
    done = wait_all(r, [tid for tid, _, _ in jobs], timeout=600)
    cpu_after, after = redis_cpu(r), commandstats(r)
    w.stop()
    r.flushdb()
    if done is None:
        raise RuntimeError("drain did not finish")
    # What the measuring itself cost (EXISTS/DBSIZE polls) is not the worker's.
    ignore = {"exists", "dbsize", "flushdb", "config|resetstat", "info", "sadd", "config"}
    calls = {k: after[k][0] - before.get(k, (0, 0))[0] for k in after if k not in ignore}
    usec = {k: after[k][1] - before.get(k, (0, 0))[1] for k in after if k not in ignore}
    per_task_usec = (cpu_after - cpu_before) * 1e6 / a.n
    print("\n### The Redis ceiling\n")
    if ops:
        print("`redis-benchmark -t lpush,rpop,set,publish -n 1000000 -P 16` on this machine:\n")
        print("| command | ops/s |")
        print("|---|---:|")
        for name, value in ops.items():
            print(f"| {name} | {value:,.0f} |")
        print()
    print(f"One drain of {a.n:,} tasks by swift-celery: Redis spent {per_task_usec:.1f} µs of CPU per task "
          f"(INFO cpu, user + sys, over the drain), so one Redis core allows about "
          f"**{1e6 / per_task_usec:,.0f} tasks/s** with this worker's command mix"
          + (f"; the drain above reached {swift_rate:,.0f} tasks/s." if swift_rate else "."))
    print("\nCommands per task (INFO commandstats; commands run inside a Lua script are counted in their own rows, "
          "and their time is also inside the script's):\n")
    print("| command | calls per task | µs per task |")
    print("|---|---:|---:|")
    for name in sorted(calls, key=lambda k: -usec[k]):
        if calls[name] > 0:
            print(f"| {name} | {calls[name] / a.n:.4f} | {usec[name] / a.n:.2f} |")
    floor = jansson_floor()
    if floor:
        micros, size = floor
        print(f"\nThe JSON codec's own floor (Benchmarks/jansson_floor.c): jansson's `json_loadb` of one message as the "
              f"worker hands it over (the envelope with its body emptied, then the body: two calls, {size:,} "
              f"bytes), with warm caches, takes **{micros:.2f} µs**, so decoding alone allows at most "
              f"{1e6 / micros:,.0f} tasks/s per core.")


def section_netlag(a, direct: dict | None) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = redis.Redis.from_url(a.redis_url).connection_pool.connection_kwargs
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "delay_proxy.py"), "--listen",
                              str(port), "--target", f"{target.get('host', '127.0.0.1')}:{target.get('port', 6379)}",
                              "--delay-ms", "0.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None and "delay proxy" in proxy.stdout.readline()
        lagged = a.redis_url.replace(f":{target.get('port', 6379)}/", f":{port}/")
        rows = []
        for kind, c, n in (("python", a.python_concurrency, a.python_n), ("swift", a.swift_concurrency, a.n)):
            # The benchmark's own enqueue and polling go straight to Redis; only the worker sees the latency.
            r = redis.Redis.from_url(a.redis_url)
            r.flushdb()
            jobs = enqueue(r, n)
            w = Worker(kind, lagged, c, a.swift_bin if kind == "swift" else None)
            ready = w.start()
            done = wait_all(r, [tid for tid, _, _ in jobs], timeout=max(600, n / 100))
            w.stop()
            if done is None:
                raise RuntimeError(f"{kind}: drain through the proxy did not finish\n{w.tail()}")
            check_sample(r, jobs)
            r.flushdb()
            rate = n / (done - ready)
            before = (direct or {}).get((kind, "prefork" if kind == "python" else None, "early"))
            rows.append((kind, c, n, rate, before))
            print(f"  netlag {kind}: {rate:,.0f} tasks/s", file=sys.stderr)
    finally:
        proxy.terminate()
        proxy.wait(10)
    print("\n### Drain with 1 ms of added round-trip latency\n")
    print("The worker reaches Redis through Benchmarks/delay_proxy.py (0.5 ms each way); early ack.\n")
    print("| worker | tasks | tasks/s | tasks/s without the delay |")
    print("|---|---:|---:|---:|")
    for kind, c, n, rate, before in rows:
        label = f"Python Celery 5.7 (prefork -c {c})" if kind == "python" else f"swift-celery (-c {c})"
        print(f"| {label} | {n:,} | {rate:,.0f} | {f'{before:,.0f}' if before else ''} |")
    if len(rows) == 2:
        print(f"\nswift-celery / Python Celery with the delay: **{rows[1][3] / rows[0][3]:.1f}×**.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--swift-bin", type=Path, default=default_swift_bin())
    p.add_argument("--image-bin", type=Path,
                   default=Path(__file__).resolve().parents[1] / ".build-compose/out/swift-celery",
                   help="the binary compose/build-release.sh made; its idle RSS is measured too when it exists")
    p.add_argument("--only", nargs="+", choices=["drain", "latency", "memory", "eta", "startup", "beat", "ceiling",
                                                   "netlag"])
    p.add_argument("--quick", action="store_true", help="small counts, to check the suite itself runs")
    p.add_argument("-n", type=int, default=50_000, help="tasks per Swift drain")
    p.add_argument("--python-n", type=int, default=10_000, help="tasks per Python drain")
    p.add_argument("--python-concurrency", type=int, default=2)
    p.add_argument("--swift-concurrency", type=int, default=64)
    p.add_argument("--latency-count", type=int, default=1000)
    p.add_argument("--load-seconds", type=float, default=10)
    p.add_argument("--backlog", type=int, default=1_000_000)
    p.add_argument("--held", type=int, default=100_000)
    p.add_argument("--parked", type=int, default=1_000_000)
    p.add_argument("--eta-flood", type=int, default=30_000)
    p.add_argument("--idle-after-tasks", type=int, default=10_000,
                   help="tasks the image's binary runs before its idle RSS is measured again")
    p.add_argument("--startup-runs", type=int, default=10)
    p.add_argument("--beat-entries", type=int, default=10_000)
    p.add_argument("--beat-interval", type=float, default=30)
    p.add_argument("--beat-rounds", type=int, default=3)
    p.add_argument("--beat-python-rounds", type=int, default=1)
    p.add_argument("--beat-timeout", type=float, default=900,
                   help="seconds a beat may take beyond its rounds' intervals before the section fails")
    a = p.parse_args()
    if a.quick:
        a.n, a.python_n, a.latency_count, a.load_seconds = 5000, 1000, 100, 3
        a.backlog, a.held, a.startup_runs, a.idle_after_tasks = 20_000, 5000, 3, 1000
        a.parked, a.eta_flood = 20_000, 3000
        a.beat_entries, a.beat_interval, a.beat_rounds, a.beat_python_rounds = 1000, 3, 2, 2
    if not a.swift_bin.exists():
        print(f"swift-celery binary not found at {a.swift_bin}", file=sys.stderr)
        return 2
    sections = a.only or ["drain", "latency", "memory", "eta", "startup", "beat", "ceiling", "netlag"]
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                         text=True).stdout.strip()
    print(f"## swift-celery benchmark suite\n\nMachine: {os.cpu_count()} cores ({cpu}), Redis "
          f"{redis.Redis.from_url(a.redis_url).info('server')['redis_version']} on loopback, no persistence; "
          f"binary {a.swift_bin}.")
    drained = None
    if "drain" in sections:
        drained = section_drain(a)
    swift_rate = drained.get(("swift", None, "early")) if drained else None
    if "latency" in sections:
        section_latency(a, swift_rate)
    if "memory" in sections:
        section_memory(a)
    if "eta" in sections:
        section_eta(a)
    if "startup" in sections:
        section_startup(a)
    if "beat" in sections:
        section_beat(a)
    if "ceiling" in sections:
        section_ceiling(a, swift_rate)
    if "netlag" in sections:
        section_netlag(a, drained)
    return 0


if __name__ == "__main__":
    sys.exit(main())
