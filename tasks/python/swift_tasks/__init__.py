"""Python stubs for the tasks that run on the swift-celery worker.

A Python Celery app uses these to enqueue work for the Swift worker:

    from swift_tasks import add
    print(add.delay(2, 3).get(timeout=10))   # 5, computed by the Swift worker

The stubs only carry the task *names* (``tasks.add`` ...) and the routing; their bodies never run in
Python. They are routed to the queue the Swift worker consumes: ``celery`` unless ``SWIFT_CELERY_QUEUE``
says otherwise.

Configuration (environment):

    CELERY_BROKER_URL / REDIS_URL   broker URL (each falls back to the other; default redis://localhost:6379/0)
    CELERY_RESULT_BACKEND           result backend URL (default: the broker URL)
    REDIS_PASSWORD                  password put into a redis:// or rediss:// URL that has none
    SWIFT_CELERY_QUEUE              queue the stubs are routed to (default: celery)
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit, urlunsplit

from celery import Celery

__all__ = [
    "TASK_NAMES",
    "add",
    "app",
    "broker_url",
    "cpu",
    "echo",
    "fail",
    "identity",
    "make_app",
    "mul",
    "result_backend_url",
    "sleep",
    "swift_queue",
    "throttled",
    "xsum",
]

DEFAULT_BROKER_URL = "redis://localhost:6379/0"

#: The names of the tasks the Swift worker ships with.
TASK_NAMES = (
    "tasks.add",
    "tasks.mul",
    "tasks.xsum",
    "tasks.identity",
    "tasks.echo",
    "tasks.sleep",
    "tasks.fail",
    "tasks.cpu",
    "tasks.incr",
    "tasks.flaky",
    "tasks.throttled",
)


def _with_password(url: str, password: str | None) -> str:
    """Put ``password`` into a redis(s):// URL that has no password of its own."""
    if not password:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def broker_url(env=None) -> str:
    env = os.environ if env is None else env
    url = env.get("CELERY_BROKER_URL") or env.get("REDIS_URL") or DEFAULT_BROKER_URL
    return _with_password(url, env.get("REDIS_PASSWORD"))


def result_backend_url(env=None) -> str:
    env = os.environ if env is None else env
    url = env.get("CELERY_RESULT_BACKEND") or broker_url(env)
    return _with_password(url, env.get("REDIS_PASSWORD"))


def swift_queue(env=None) -> str:
    env = os.environ if env is None else env
    return env.get("SWIFT_CELERY_QUEUE") or "celery"


def make_app(
    name: str = "swift_tasks",
    *,
    broker: str | None = None,
    backend: str | None = None,
    queue: str | None = None,
    stubs: bool = True,
    **config,
) -> Celery:
    """A Celery app configured from the environment (arguments override it).

    With ``stubs=True`` the app gets the stub tasks, routed to ``queue``; ``app.tasks["tasks.add"]`` etc.
    With ``stubs=False`` it gets only the configuration (the reference worker defines real bodies).
    """
    queue = queue or swift_queue()
    app = Celery(name, broker=broker or broker_url(), backend=backend or result_backend_url())
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_routes={"tasks.*": {"queue": queue}},
        broker_connection_retry_on_startup=True,
    )
    app.conf.update(config)
    if stubs:
        _define_stubs(app)
    return app


def _not_here(name: str):
    raise NotImplementedError(f"{name} runs on the Swift worker")


def _define_stubs(app: Celery) -> None:
    @app.task(name="tasks.add", shared=False)
    def add(x, y):
        """x + y"""
        _not_here("tasks.add")

    @app.task(name="tasks.mul", shared=False)
    def mul(x, y):
        """x * y"""
        _not_here("tasks.mul")

    @app.task(name="tasks.xsum", shared=False)
    def xsum(numbers):
        """sum(numbers)"""
        _not_here("tasks.xsum")

    @app.task(name="tasks.identity", shared=False)
    def identity(value):
        """value, unchanged"""
        _not_here("tasks.identity")

    @app.task(name="tasks.echo", shared=False)
    def echo(*args, **kwargs):
        """{"args": [...], "kwargs": {...}}"""
        _not_here("tasks.echo")

    @app.task(name="tasks.sleep", shared=False)
    def sleep(seconds):
        """sleeps, then returns seconds"""
        _not_here("tasks.sleep")

    @app.task(name="tasks.fail", shared=False)
    def fail(message):
        """raises ValueError(message)"""
        _not_here("tasks.fail")

    @app.task(name="tasks.cpu", shared=False)
    def cpu(n):
        """the number of primes below n"""
        _not_here("tasks.cpu")

    @app.task(name="tasks.flaky", shared=False)
    def flaky(failures):
        """retries itself (countdown 0.1 s) until retries == failures, then returns the number of retries"""
        _not_here("tasks.flaky")

    @app.task(name="tasks.throttled", shared=False)
    def throttled(key):
        """at most 20 starts a second across all workers: RPUSH key <start time>; returns the start time"""
        _not_here("tasks.throttled")

    @app.task(name="tasks.incr", shared=False)
    def incr(key):
        """INCR key in Redis (REDIS_URL, else the broker); returns the new value"""
        _not_here("tasks.incr")


#: The default app, configured from the environment when this module is imported.
app = make_app()

add = app.tasks["tasks.add"]
mul = app.tasks["tasks.mul"]
xsum = app.tasks["tasks.xsum"]
identity = app.tasks["tasks.identity"]
echo = app.tasks["tasks.echo"]
sleep = app.tasks["tasks.sleep"]
fail = app.tasks["tasks.fail"]
cpu = app.tasks["tasks.cpu"]
incr = app.tasks["tasks.incr"]
flaky = app.tasks["tasks.flaky"]
throttled = app.tasks["tasks.throttled"]
