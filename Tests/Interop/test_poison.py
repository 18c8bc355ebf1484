"""Poison messages against a running worker: 1,000 generated malformed or hostile messages (deterministic seed)
interleaved with 500 valid ones, plus one 100 MB message.

Every hostile message gets its documented outcome (docs/guarantees.md, "Bad input"):
  - the envelope is not a kombu JSON message (truncated, invalid UTF-8, too deep, numbers beyond 64 bits, ...):
    no task id can be trusted, so it is rejected with a log line and kept in the `swift-celery:dead-letter` list;
  - a task id is known: a FAILURE is stored (`DecodeError`, `ContentDisallowed`, `NotRegistered`, `LimitExceeded`,
    a handler's `TypeError`), or the task runs when the broken field is one the worker does not need (a wrong type
    in `lang`, `retries`, `eta`, ...), so every such message ends in a stored state;
  - a readable ETA far in the future is parked in Redis (`swift-celery:eta:<queue>`, out of `unacked` and out of
    memory), and stays parked through the worker's shutdown;
  - duplicate ids (and duplicate delivery tags) run each time, as in Celery.
Meanwhile every valid task completes, the worker never crashes, a pickle payload is never unpickled, and the
worker's RSS comes back to its baseline.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import time
import uuid

import pytest
from conftest import WorkerProcess, stopped_cleanly, unique
from interop_helpers import EMBED, encode, envelope, wait_for

pytestmark = pytest.mark.swift_only

SEED = 20261122
HOSTILE = 1000
VALID = 500
BIG = 100 * 1024 * 1024
DEAD_LETTER = "swift-celery:dead-letter"
TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")
# RSS may settle a little above the warmed-up baseline (allocator caches); more than this is a leak.
RSS_MARGIN = 24 * 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Case:
    """One generated message and the outcome docs/guarantees.md documents for it."""

    def __init__(self, kind: str, raw: bytes, expect: str, task_id: str | None = None, tag: str | None = None,
                 exc: str | None = None, value=None):
        self.kind, self.raw, self.expect, self.task_id, self.tag, self.exc, self.value = (
            kind, raw, expect, task_id, tag, exc, value)


class Poison:
    """Builds the hostile messages; `expect` is one of dead, failure, terminal, held, success."""

    def __init__(self, queue: str, seed: int = SEED):
        self.queue = queue
        self.rng = random.Random(seed)
        self.marker = f"/tmp/swift-celery-pwned-{uuid.uuid4().hex}"
        self.counter_prefix = unique("poison-dup")

    def valid(self, task="tasks.add", args=(2, 3), **kw):
        return envelope(task, args, queue=self.queue, task_id=str(uuid.UUID(int=self.rng.getrandbits(128))), **kw)

    def case(self, kind, env, expect, **kw):
        """The id a result is stored under: headers.id, else properties.correlation_id (as the worker reads it)."""
        headers = env["headers"] if isinstance(env.get("headers"), dict) else {}
        properties = env["properties"] if isinstance(env.get("properties"), dict) else {}
        task_id = next((v for v in (headers.get("id"), properties.get("correlation_id")) if isinstance(v, str)), None)
        return Case(kind, encode(env), expect, task_id=task_id, tag=properties.get("delivery_tag"), **kw)

    @staticmethod
    def set_body(env, payload, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(payload).encode()
        env["body"] = base64.b64encode(data).decode("ascii")

    # -- categories ------------------------------------------------------------------------------------------

    def truncated(self):
        env = self.valid()
        raw = encode(env)
        cut = self.rng.randrange(1, len(raw) - 1)
        return Case("truncated", raw[:cut], "dead", tag=env["properties"]["delivery_tag"])

    WRONG = [None, True, 0, -1, 2**63 - 1, 1.5, [], [1, "x"], {}, {"a": [None]}]
    HEADER_FIELDS = ["lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries", "timelimit",
                     "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
                     "replaced_task_nesting", "stamped_headers", "stamps"]
    PROPERTY_FIELDS = ["correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority", "body_encoding",
                       "delivery_tag"]
    INT_FIELDS = {"group_index", "retries", "replaced_task_nesting", "delivery_mode", "priority"}

    def wrong_type(self):
        """One field of a valid message replaced by a value of the wrong type."""
        env = self.valid()
        where = self.rng.choice(["top", "headers", "properties", "delivery_info", "body", "embed"])
        values = list(self.WRONG)
        if where == "top":
            field = self.rng.choice(["body", "content-type", "content-encoding", "headers", "properties"])
            target = env
        elif where == "headers":
            field = self.rng.choice(self.HEADER_FIELDS)
            target = env["headers"]
            if field == "ignore_result":
                values.remove(True)  # the right type, and it means "store nothing"
        elif where == "properties":
            field = self.rng.choice(self.PROPERTY_FIELDS)
            target = env["properties"]
        elif where == "delivery_info":
            field = self.rng.choice(["exchange", "routing_key"])
            target = env["properties"]["delivery_info"]
        else:
            body = [[2, 3], {}, dict(EMBED)]
            if where == "body":
                index = self.rng.randrange(3)
                right = (list, dict, type(None))[index]  # args, kwargs; any embed is read (a wrong one is empty)
                body[index] = self.rng.choice([v for v in values if index == 2 or not isinstance(v, right)])
            else:
                body[2][self.rng.choice(list(EMBED))] = self.rng.choice(values)
            self.set_body(env, body)
            return self.case(f"wrong-type:{where}", env, "terminal")
        if field in self.INT_FIELDS:
            values.append("str")
        target[field] = self.rng.choice(values)
        return self.case(f"wrong-type:{where}.{field}", env, "terminal")

    def huge_number(self):
        env = self.valid()
        choice = self.rng.randrange(4)
        if choice == 0:  # beyond 64 bits in the body: not representable, refused as DecodeError
            self.set_body(env, None, raw=b"[[%d, 1], {}, {}]" % (10**30 + self.rng.randrange(10**6)))
            return self.case("huge-number:body-int", env, "failure", exc="DecodeError")
        if choice == 1:
            self.set_body(env, None, raw=b"[[1e999, 1], {}, {}]")
            return self.case("huge-number:body-float", env, "failure", exc="DecodeError")
        if choice == 2:  # beyond 64 bits in the envelope itself: not JSON to the worker
            raw = encode(env).replace(b'"priority": 0', b'"priority": 1' + b"0" * 40)
            return Case("huge-number:envelope", raw, "dead", tag=env["properties"]["delivery_tag"])
        env["headers"]["retries"] = 2**63 - 1
        env["properties"]["priority"] = -(2**63)
        return self.case("huge-number:in-range", env, "terminal")

    def deep(self):
        env = self.valid()
        depth = self.rng.choice([3000, 20000])
        if self.rng.random() < 0.5:
            self.set_body(env, None, raw=b"[" + b"[" * depth + b"]" * depth + b", {}, {}]")
            return self.case("deep:body", env, "failure", exc="DecodeError")
        raw = encode(env)[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
        return Case("deep:envelope", raw, "dead", tag=env["properties"]["delivery_tag"])

    def invalid_utf8(self):
        env = self.valid()
        if self.rng.random() < 0.5:
            self.set_body(env, None, raw=b'[["\xff\xfe\xc0\x80"], {}, {}]')
            return self.case("utf8:body", env, "failure", exc="DecodeError")
        raw = encode(env).replace(b'"lang": "py"', b'"lang": "p\xff\xc3"')
        return Case("utf8:envelope", raw, "dead", tag=env["properties"]["delivery_tag"])

    def content_type(self):
        env = self.valid()
        kind = self.rng.choice(["pickle", "yaml", "msgpack", "other"])
        if kind == "pickle":
            class Exploit:  # unpickling this would create the marker file
                def __reduce__(inner_self):
                    return (os.system, (f"touch {self.marker}",))

            env["content-type"] = "application/x-python-serialize"
            env["content-encoding"] = "binary"
            env["body"] = base64.b64encode(pickle.dumps(Exploit())).decode("ascii")
        else:
            env["content-type"] = {"yaml": "application/x-yaml", "msgpack": "application/x-msgpack",
                                   "other": self.rng.choice(["text/plain", "application/xml", "", "JSON"])}[kind]
        return self.case(f"content-type:{kind}", env, "failure", exc="ContentDisallowed")

    def absurd_time(self):
        env = self.valid()
        choice = self.rng.randrange(8)
        if choice == 0:
            env["headers"]["eta"] = "9999-12-31T23:59:59+00:00"
            return self.case("eta:far-future", env, "held")
        if choice == 1:
            env["headers"]["eta"] = self.rng.choice(["0001-01-01T00:00:00", "1970-01-01T00:00:00+00:00"])
            return self.case("eta:far-past", env, "success", value=5)
        if choice == 2:
            env["headers"]["eta"] = self.rng.choice(["not a date", "2026-13-45T99:99:99", "+inf", "", "9" * 400])
            return self.case("eta:unreadable", env, "terminal")
        if choice == 3:
            env["headers"]["expires"] = self.rng.choice(["0001-01-01T00:00:00", "1970-01-01T00:00:00+00:00"])
            return self.case("expires:past", env, "revoked")
        if choice == 4:
            env["headers"]["expires"] = "9999-12-31T23:59:59+00:00"
            return self.case("expires:far-future", env, "success", value=5)
        pair = self.rng.choice([[1e308, 1e308], [-1, -1], [0, 0], [None, 1e-300], [float(2**62), None],
                                [1e-9, None], ["x", {}], [None, None, None]])
        env["headers"]["timelimit"] = pair
        return self.case(f"timelimit:{pair}", env, "terminal")

    def unknown_task(self):
        name = self.rng.choice(["", "os.system", "__import__", "builtins.eval", "tasks.add\u0000x", "x" * 50000,
                                "tasks.ADD", "subprocess.Popen"])
        env = envelope(name, (1,), queue=self.queue, task_id=str(uuid.UUID(int=self.rng.getrandbits(128))))
        return self.case("unknown-task", env, "failure", exc="DecodeError" if name == "" else "NotRegistered")

    def wrong_arguments(self):
        env = self.valid(args=self.rng.choice([("a", "b", "c"), ({"x": 1},), (), ([1], None)]))
        return self.case("wrong-arguments", env, "failure", exc="TypeError")

    def decoy_tag(self):
        """A delivery tag in the headers before the real one: the pop records the first, the worker acks that one."""
        env = self.valid()
        env["headers"]["delivery_tag"] = f"decoy-{uuid.UUID(int=self.rng.getrandbits(128))}"
        case = self.case("decoy-tag", env, "success", value=5)
        case.decoy = env["headers"]["delivery_tag"]
        return case

    def duplicates(self, n: int):
        """Pairs of messages sharing a task id (and some a delivery tag too): each runs (tasks.incr counts it)."""
        out = []
        for i in range(n):
            key = f"{self.counter_prefix}:{i}"
            first = envelope("tasks.incr", (key,), queue=self.queue)
            second = envelope("tasks.incr", (key,), queue=self.queue, task_id=first["headers"]["id"])
            if i % 4 == 0:
                second["properties"]["delivery_tag"] = first["properties"]["delivery_tag"]
            for env in (first, second):
                out.append(self.case("duplicate-id", env, "duplicate", value=key))
        return out

    def hostile(self, total: int):
        makers = [(self.truncated, 100), (self.wrong_type, 470), (self.huge_number, 60), (self.deep, 24),
                  (self.invalid_utf8, 40), (self.content_type, 60), (self.absurd_time, 96), (self.unknown_task, 40),
                  (self.wrong_arguments, 20), (self.decoy_tag, 10)]
        out = [make() for make, count in makers for _ in range(count)]
        out += self.duplicates((total - len(out)) // 2)
        assert len(out) == total, len(out)
        return out


@pytest.fixture(scope="module")
def poison_worker(redis_url):
    w = WorkerProcess("swift", redis_url, queue=unique("interop-poison"), name=f"{unique('poison')}@localhost",
                      concurrency=8).start()
    yield w
    if w.alive():
        w.stop()


def results(redis_client, ids):
    pipe = redis_client.pipeline(transaction=False)
    for task_id in ids:
        pipe.get(f"celery-task-meta-{task_id}")
    return {task_id: (json.loads(raw) if raw else None) for task_id, raw in zip(ids, pipe.execute())}


def wait_results(redis_client, ids, timeout=120.0):
    deadline = time.monotonic() + timeout
    pending = set(ids)
    found = {}
    while pending and time.monotonic() < deadline:
        for task_id, meta in results(redis_client, sorted(pending)).items():
            if meta and meta.get("status") in TERMINAL:
                found[task_id] = meta
                pending.discard(task_id)
        if pending:
            time.sleep(0.2)
    return found, pending


def push_all(redis_client, queue, raws, chunk=200):
    for start in range(0, len(raws), chunk):
        pipe = redis_client.pipeline(transaction=False)
        for raw in raws[start:start + chunk]:
            pipe.lpush(queue, raw)
        pipe.execute()


def test_poison_messages(poison_worker, redis_client):
    worker, queue = poison_worker, poison_worker.queue
    poison = Poison(queue)

    # Warm up (code paths, allocator, connections), then take the baseline.
    warm = [poison.valid(args=(i, 1)) for i in range(300)]
    push_all(redis_client, queue, [encode(e) for e in warm])
    found, missing = wait_results(redis_client, [e["headers"]["id"] for e in warm])
    assert not missing, f"{len(missing)} warm-up tasks did not complete\n{worker.log()}"
    time.sleep(1.0)  # let the result batcher and allocator settle before the baseline (a measurement, not a wait)
    baseline = rss(worker.pid)

    # One 100 MB message: measured in Redis by the pop script, never sent to the worker, dead-lettered.
    big = poison.valid()
    filler = b"A" * BIG
    big_raw = encode(big).replace(b'"body": "', b'"body": "' + filler, 1)
    assert len(big_raw) > BIG
    redis_client.lpush(queue, big_raw)
    del filler
    found, missing = wait_results(redis_client, [big["headers"]["id"]], timeout=60)
    assert not missing, f"no result for the 100 MB message\n{worker.log()}"
    meta = found[big["headers"]["id"]]
    assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == "LimitExceeded", meta
    assert wait_for(lambda: any("larger than --max-message-size" in line for line in worker.lines), 10)
    # It is kept whole in the dead-letter list; take it out again (Lua, so 100 MB are not read back here).
    removed = redis_client.eval(
        "local v = redis.call('LINDEX', KEYS[1], 0) if v and #v == tonumber(ARGV[1]) then "
        "redis.call('LPOP', KEYS[1]) return 1 end return 0", 1, DEAD_LETTER, len(big_raw))
    assert removed == 1, "the 100 MB message is not at the head of the dead-letter list"
    del big_raw
    peak_after_big = rss(worker.pid)

    # 1,000 hostile messages interleaved with 500 valid ones.
    cases = poison.hostile(HOSTILE)
    valid = [poison.valid(args=(i, i)) for i in range(VALID)]
    stream = [("hostile", c) for c in cases] + [("valid", e) for e in valid]
    poison.rng.shuffle(stream)
    rejected_before = sum("rejecting a message" in line for line in worker.lines)
    started = time.monotonic()
    push_all(redis_client, queue, [c.raw if kind == "hostile" else encode(c) for kind, c in stream])

    found, missing = wait_results(redis_client, [e["headers"]["id"] for e in valid])
    assert not missing, f"{len(missing)} valid tasks did not complete\n{worker.log()}"
    for i, env in enumerate(valid):
        meta = found[env["headers"]["id"]]
        assert meta["status"] == "SUCCESS" and meta["result"] == 2 * i, meta

    by_expect = {}
    for c in cases:
        by_expect.setdefault(c.expect, []).append(c)
    stored = [c for c in cases if c.expect in ("failure", "terminal", "success", "revoked", "duplicate")]
    found, missing = wait_results(redis_client, {c.task_id for c in stored})
    assert not missing, (f"{len(missing)} hostile messages with a task id got no stored state: "
                         f"{sorted({c.kind for c in stored if c.task_id in missing})}\n{worker.log()}")
    elapsed = time.monotonic() - started
    for c in by_expect.get("failure", []):
        meta = found[c.task_id]
        assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == c.exc, (c.kind, meta)
    for c in by_expect.get("success", []):
        assert found[c.task_id]["status"] == "SUCCESS" and found[c.task_id]["result"] == c.value, (c.kind, found[c.task_id])
    for c in by_expect.get("revoked", []):
        assert found[c.task_id]["status"] == "REVOKED", (c.kind, found[c.task_id])
    for c in by_expect.get("duplicate", []):
        assert found[c.task_id]["status"] == "SUCCESS", (c.kind, found[c.task_id])
    keys = sorted({c.value for c in by_expect.get("duplicate", [])})

    def counts():
        return [int(v or 0) for v in redis_client.mget(keys)]

    # The id's result is there once the first of its two messages has run; the second may still be queued or
    # running (when it comes last in the shuffled stream), so wait for it rather than read the counters once.
    wait_for(lambda: min(counts()) >= 2, 30)
    assert counts() == [2] * len(keys), f"each of two messages sharing a task id runs once: {counts()}"

    # Messages with no usable envelope: a log line each, and kept in the dead-letter list.
    dead = by_expect.get("dead", [])
    assert wait_for(lambda: redis_client.llen(queue) == 0, 30), "hostile messages left on the queue"
    letters = set(redis_client.lrange(DEAD_LETTER, 0, 5000))
    kept = [c for c in dead if c.raw in letters]
    assert len(kept) == len(dead), f"{len(dead) - len(kept)} unreadable messages are not in {DEAD_LETTER}"
    rejected = sum("rejecting a message" in line for line in worker.lines) - rejected_before
    assert rejected >= len(dead), f"{rejected} rejection log lines for {len(dead)} unreadable messages"

    # Far-future ETAs are parked in Redis (so nothing is lost), not run.
    held = by_expect.get("held", [])
    parked_key = f"swift-celery:eta:{queue}"
    assert wait_for(lambda: redis_client.zcard(parked_key) == len(held), 10), \
        f"{redis_client.zcard(parked_key)} of {len(held)} far-future ETA messages parked"
    assert not any(redis_client.hexists("unacked", c.tag) for c in held)
    assert all(m is None for m in results(redis_client, [c.task_id for c in held]).values())

    # Nothing else stays in unacked: every message was acked or dead-lettered (none would come back after the
    # visibility timeout to poison the queue again).
    held_tags = {c.tag for c in held}
    others = {c.tag for c in cases if isinstance(c.tag, str) and c.tag not in held_tags}
    others |= {getattr(c, "decoy", None) for c in cases} - {None}
    others |= {e["properties"]["delivery_tag"] for e in valid}

    def stuck():
        pipe = redis_client.pipeline(transaction=False)
        ordered = sorted(others)
        for tag in ordered:
            pipe.hexists("unacked", tag)
        return [tag for tag, present in zip(ordered, pipe.execute()) if present]

    assert wait_for(lambda: not stuck(), 20), f"left in unacked: {stuck()[:10]}"

    assert not os.path.exists(poison.marker), "a pickle payload was unpickled"
    assert worker.alive(), f"the worker died\n{worker.log()}"

    # Memory comes back: poll, the allocator returns memory gradually.
    after = rss(worker.pid)
    deadline = time.monotonic() + 20
    while after > baseline + RSS_MARGIN and time.monotonic() < deadline:
        time.sleep(0.5)
        after = rss(worker.pid)
    counts_by_kind = {}
    for c in cases:
        counts_by_kind[c.kind.split(":")[0]] = counts_by_kind.get(c.kind.split(":")[0], 0) + 1
    print(f"\npoison: {len(cases)} hostile + {VALID} valid + one {BIG >> 20} MB "
          f"message in {elapsed:.1f} s; outcomes {{{', '.join(f'{k}: {len(v)}' for k, v in sorted(by_expect.items()))}}}; "
          f"kinds {counts_by_kind}; RSS baseline {baseline / 2**20:.1f} MiB, after the 100 MB message "
          f"{peak_after_big / 2**20:.1f} MiB, after all {after / 2**20:.1f} MiB")
    assert after <= baseline + RSS_MARGIN, (
        f"RSS {after / 2**20:.1f} MiB did not come back to the baseline {baseline / 2**20:.1f} MiB "
        f"(+{RSS_MARGIN >> 20} MiB)")

    # Warm shutdown (exit code 0) leaves the parked messages parked: no worker holds them.
    stopped_cleanly(worker)
    assert redis_client.llen(queue) == 0
    assert redis_client.zcard(parked_key) == len(held)
    redis_client.delete(queue, parked_key, *keys)
