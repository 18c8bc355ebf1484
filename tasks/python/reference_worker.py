"""The Swift worker's tasks implemented in Python, under the same names.

This is the reference the interop tests are validated against and the Python side of the benchmarks:

    cd tasks/python && celery -A reference_worker worker -P prefork -c 2 -Q celery

Configuration is the same as swift_tasks (CELERY_BROKER_URL / REDIS_URL, CELERY_RESULT_BACKEND, REDIS_PASSWORD).
The options the Swift worker takes as flags come from the environment here, since `celery worker` has no flags
for them: REFERENCE_RESULT_EXTENDED=1, REFERENCE_TRACK_STARTED=1, REFERENCE_ACKS_LATE=1,
REFERENCE_RESULT_EXPIRES=<seconds>.
"""

from __future__ import annotations

import os
import time

from swift_tasks import make_app


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


app = make_app("reference_worker", stubs=False)
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
