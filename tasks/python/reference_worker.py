"""The Swift worker's tasks implemented in Python, under the same names.

This is the reference the interop tests are validated against and the Python side of the benchmarks:

    cd tasks/python && celery -A reference_worker worker -P prefork -c 2 -Q celery

Configuration is the same as swift_tasks (CELERY_BROKER_URL / REDIS_URL, CELERY_RESULT_BACKEND, REDIS_PASSWORD).
The options the Swift worker takes as flags come from the environment here, since `celery worker` has no flags
for them: REFERENCE_RESULT_EXTENDED=1, REFERENCE_TRACK_STARTED=1, REFERENCE_ACKS_LATE=1,
REFERENCE_RESULT_EXPIRES=<seconds>.
"""

from __future__ import annotations

import json
import os
import time

from celery import chain, group
from swift_tasks import make_app, swift_queue


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


app = make_app("reference_worker", stubs=False)
# The body of the chord a group replacement becomes (Task.replace) goes to the worker's own queue.
app.conf.task_routes = {**app.conf.task_routes, "celery.accumulate": {"queue": swift_queue()}}
app.conf.update(
    result_extended=_flag("REFERENCE_RESULT_EXTENDED"),
    task_track_started=_flag("REFERENCE_TRACK_STARTED"),
    task_acks_late=_flag("REFERENCE_ACKS_LATE"),
)
if os.environ.get("REFERENCE_VISIBILITY_TIMEOUT"):
    app.conf.broker_transport_options = {"visibility_timeout": float(os.environ["REFERENCE_VISIBILITY_TIMEOUT"])}
if os.environ.get("REFERENCE_RESULT_EXPIRES"):
    app.conf.result_expires = int(os.environ["REFERENCE_RESULT_EXPIRES"])


@app.task(name="tasks.add", shared=False)
def add(x, y):
    return x + y


@app.task(name="tasks.mul", shared=False)
def mul(x, y):
    return x * y


@app.task(name="tasks.xsum", shared=False)
def xsum(numbers):
    return sum(numbers)


@app.task(name="tasks.identity", shared=False)
def identity(value):
    return value


@app.task(name="tasks.echo", shared=False)
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@app.task(name="tasks.sleep", shared=False)
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="tasks.fail", shared=False)
def fail(message):
    raise ValueError(message)


@app.task(name="tasks.cpu", shared=False)
def cpu(n):
    """The number of primes below n (sieve of Eratosthenes)."""
    if n < 3:
        return 0
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    i = 2
    while i * i < n:
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
        i += 1
    return sum(sieve)


@app.task(name="tasks.incr", shared=False)
def incr(key):
    """INCR key in Redis (REDIS_URL, else the broker); returns the new value."""
    import redis

    client = redis.Redis.from_url(os.environ.get("REDIS_URL") or app.conf.broker_url)
    try:
        return client.incr(key)
    finally:
        client.close()


@app.task(name="tasks.reject", bind=True, shared=False)
def reject(self, key, requeue):
    """INCR key; unless its message was redelivered, rejects it (Reject('rejected', requeue)); returns the new value."""
    import redis
    from celery.exceptions import Reject

    client = redis.Redis.from_url(os.environ.get("REDIS_URL") or app.conf.broker_url)
    try:
        value = client.incr(key)
    finally:
        client.close()
    if not (self.request.delivery_info or {}).get("redelivered"):
        raise Reject("rejected", requeue=requeue)
    return value


@app.task(name="tasks.progress", bind=True, shared=False)
def progress(self, steps, pause):
    """Reports PROGRESS {current, total} after each of `steps` pauses of `pause` seconds; returns steps."""
    import time

    for step in range(1, max(1, steps) + 1):
        time.sleep(max(0, pause))
        self.update_state(state="PROGRESS", meta={"current": step, "total": steps})
    return steps


@app.task(name="tasks.flaky", bind=True, shared=False, max_retries=None)
def flaky(self, failures):
    """Retries itself with a countdown of 0.1 s until retries == failures; returns the number of retries."""
    if self.request.retries < failures:
        raise self.retry(exc=RuntimeError(f"failure {self.request.retries + 1} of {failures}"), countdown=0.1)
    return self.request.retries


@app.task(name="tasks.retry_header", bind=True, shared=False)
def retry_header(self, name):
    """Retries itself once (countdown 0.1 s), then returns the custom header `name` (None if absent)."""
    if self.request.retries == 0:
        raise self.retry(countdown=0.1)
    return (self.request.headers or {}).get(name)


@app.task(name="tasks.countdown_sum", bind=True, shared=False, max_retries=None)
def countdown_sum(self, n, total=0):
    """While n > 0, retries itself (countdown 0.1 s) with args (n - 1,) and kwargs {total: total + n}; returns total."""
    if n > 0:
        raise self.retry(args=(n - 1,), kwargs={"total": total + n}, countdown=0.1)
    return total


@app.task(name="tasks.throttled", shared=False, rate_limit="20/s")
def throttled(key):
    """RPUSH key <start time>; Celery's rate limit is per worker (the Swift worker's is global)."""
    import redis

    now = time.time()
    client = redis.Redis.from_url(os.environ.get("REDIS_URL") or app.conf.broker_url)
    try:
        client.rpush(key, repr(now))
    finally:
        client.close()
    return now


def _redis():
    import redis

    return redis.Redis.from_url(os.environ.get("REDIS_URL") or app.conf.broker_url)


@app.task(name="tasks.redis_echo", shared=False)
def redis_echo(message, redis_key="redis-echo"):
    """RPUSH redis_key (default 'redis-echo') message."""
    client = _redis()
    try:
        client.rpush(redis_key, message if isinstance(message, (str, bytes, int, float)) else json.dumps(message))
    finally:
        client.close()


def _echo_link(link_msg, redis_key):
    kwargs = {} if redis_key is None else {"redis_key": redis_key}
    return redis_echo.si(link_msg, **kwargs) if link_msg is not None else redis_echo.s(**kwargs)


@app.task(name="tasks.add_replaced", bind=True, shared=False)
def add_replaced(self, x, y):
    """x + y, by replacing itself with tasks.add(x, y)."""
    raise self.replace(add.s(x, y))


@app.task(name="tasks.add_replaced_with_chain", bind=True, shared=False)
def add_replaced_with_chain(self, x, y):
    """x + y, by replacing itself with the chain tasks.add(x, y) | tasks.identity()."""
    raise self.replace(chain(add.s(x, y), identity.s()))


@app.task(name="tasks.replace_with_chain", bind=True, shared=False)
def replace_with_chain(self, *args, link_msg=None, redis_key=None):
    """Replaces itself with identity(*args) | identity(), linked to redis_echo."""
    c = chain(identity.s(*args), identity.s())
    c.link(_echo_link(link_msg, redis_key))
    return self.replace(c)


@app.task(name="tasks.replace_with_chain_which_raises", bind=True, shared=False)
def replace_with_chain_which_raises(self, *args, link_msg=None, redis_key=None):
    """Replaces itself with identity(*args) | fail(), with link_error redis_echo."""
    c = chain(identity.s(*args), fail.s())
    c.link_error(_echo_link(link_msg, redis_key))
    return self.replace(c)


@app.task(name="tasks.replace_with_empty_chain", bind=True, shared=False)
def replace_with_empty_chain(self, *_):
    """Replaces itself with chain(): fails."""
    return self.replace(chain())


@app.task(name="tasks.replace_with_chain_which_contains_a_group", bind=True, shared=False)
def replace_with_chain_which_contains_a_group(self):
    """[4, 4]: replaces itself with add(1, 2) | group(add(1), add(1))."""
    return self.replace(chain(add.s(1, 2), group(add.s(1), add.s(1))))


@app.task(name="tasks.add_to_all", bind=True, shared=False)
def add_to_all(self, nums, val):
    """[n + val for n in nums], by replacing itself with a group."""
    raise self.replace(group(*[add.s(num, val) for num in nums]))


@app.task(name="tasks.fail_replaced", bind=True, shared=False)
def fail_replaced(self, message):
    """Raises ValueError(message), by replacing itself with fail.si(message)."""
    raise self.replace(fail.si(message))


@app.task(name="tasks.record_replaced_task_nesting", bind=True, shared=False)
def record_replaced_task_nesting(self, replacements, nesting=None):
    """Replaces itself `replacements` times, recording request.replaced_task_nesting each time."""
    nesting = (nesting or []) + [self.request.replaced_task_nesting]
    if replacements:
        replacement = record_replaced_task_nesting.s(replacements - 1, nesting)
        return self.replace(replacement.set(reply_to=self.request.reply_to))
    return nesting


@app.task(name="tasks.second_order_replace1", bind=True, shared=False)
def second_order_replace1(self, key, state=False):
    """RPUSH key 'In A', replace with second_order_replace2(key) | second_order_replace1.si(key, True)."""
    client = _redis()
    try:
        client.rpush(key, "Out A" if state else "In A")
    finally:
        client.close()
    if not state:
        raise self.replace(chain(second_order_replace2.s(key), second_order_replace1.si(key, True)))


@app.task(name="tasks.second_order_replace2", bind=True, shared=False)
def second_order_replace2(self, key, state=False):
    """RPUSH key 'In B', replace with redis_echo('In/Out C', key) | second_order_replace2.si(key, True)."""
    client = _redis()
    try:
        client.rpush(key, "Out B" if state else "In B")
    finally:
        client.close()
    if not state:
        raise self.replace(chain(redis_echo.si("In/Out C", key), second_order_replace2.si(key, True)))


@app.task(name="tasks.ids", bind=True, shared=False)
def ids(self, i):
    """[request.root_id, request.parent_id, i]."""
    return self.request.root_id, self.request.parent_id, i


@app.task(name="tasks.collect_ids", bind=True, shared=False)
def collect_ids(self, res, i):
    """[res, [request.root_id, request.parent_id, i]]."""
    return res, (self.request.root_id, self.request.parent_id, i)


@app.task(name="tasks.return_priority", bind=True, shared=False)
def return_priority(self, *_args):
    """'Priority: <delivery_info priority>'."""
    return "Priority: %s" % self.request.delivery_info["priority"]


@app.task(name="tasks.return_properties", bind=True, shared=False)
def return_properties(self):
    """request.properties."""
    return self.request.properties


@app.task(name="tasks.return_request_eta", bind=True, shared=False)
def return_request_eta(self):
    """request.eta."""
    return self.request.eta


@app.task(name="tasks.return_request_time_limits", bind=True, shared=False)
def return_request_time_limits(self):
    """{time_limit, soft_time_limit} of the request."""
    return {"time_limit": self.request.time_limit, "soft_time_limit": self.request.soft_time_limit}


@app.task(name="tasks.errback_new_style", shared=False)
def errback_new_style(request, exc, tb, key):
    """As a new-style errback: RPUSH key '<failed id> <exception type> <traceback's first line>'."""
    client = _redis()
    try:
        first = str(tb).splitlines()[0] if tb else "None"
        if not isinstance(tb, str) and tb is not None:
            first = "Traceback (most recent call last):"
        client.rpush(key, f"{request.id} {type(exc).__name__} {first}")
    finally:
        client.close()


@app.task(name="tasks.reject_late", bind=True, shared=False, acks_late=True)
def reject_late(self, key):
    """acks_late=True; INCR key; unless its message was redelivered, rejects it with requeue; returns the new value."""
    from celery.exceptions import Reject

    client = _redis()
    try:
        value = client.incr(key)
    finally:
        client.close()
    if not (self.request.delivery_info or {}).get("redelivered"):
        raise Reject("rejected", requeue=True)
    return value


@app.task(name="tasks.add_to_all_to_chord", bind=True, shared=False)
def add_to_all_to_chord(self, nums, val):
    """In a chord header: adds tasks.add(num, val) to the chord for each num; returns 0."""
    for num in nums:
        self.add_to_chord(app.signature("tasks.add", args=(num, val)))
    return 0


@app.task(name="tasks.build_chain", shared=False)
def build_chain(x):
    """Sends add(x, x) | add(2) | group(add(3), add(4)) | xsum() from the task and returns its AsyncResult."""
    canvas = chain(
        app.signature("tasks.add", args=(x, x)),
        app.signature("tasks.add", args=(2,)),
        group(app.signature("tasks.add", args=(3,)), app.signature("tasks.add", args=(4,))),
        app.signature("tasks.xsum"),
    )
    return canvas.apply_async()


@app.task(name="tasks.add_chord_to_chord", bind=True, shared=False)
def add_chord_to_chord(self, nums, val):
    """In a chord header: adds the chord group(tasks.add(num, val) for num in nums) | tasks.xsum() to the chord."""
    from celery import chord

    self.add_to_chord(chord([app.signature("tasks.add", args=(num, val)) for num in nums], app.signature("tasks.xsum")))
    return 0


try:
    from pydantic import BaseModel

    class AddParameters(BaseModel):
        x: int
        y: int

    class AddResult(BaseModel):
        result: int

    @app.task(name="tasks.add_model", pydantic=True, shared=False)
    def add_model(data: AddParameters) -> AddResult:
        """{"result": data.x + data.y}: pydantic models, as Codable structs."""
        return AddResult(result=data.x + data.y)
except ImportError:  # pydantic is not installed: tasks.add_model is missing
    pass


@app.task(name="tasks.retry_with_args", bind=True, shared=False, max_retries=1)
def retry_with_args(self, foo, bar, label=None):
    """On its first run retries with args (foo + 1, bar + 1); then returns {foo, bar, label, retries}."""
    if not self.request.retries:
        raise self.retry(args=(foo + 1, bar + 1), countdown=0)
    return {"foo": foo, "bar": bar, "label": label, "retries": self.request.retries}


@app.task(name="tasks.retry_with_kwargs", bind=True, shared=False, max_retries=1)
def retry_with_kwargs(self, foo, bar):
    """On its first run retries with kwargs {foo: foo + 1}; then returns {foo, bar, retries}."""
    if not self.request.retries:
        raise self.retry(kwargs={"foo": foo + 1}, countdown=0)
    return {"foo": foo, "bar": bar, "retries": self.request.retries}
