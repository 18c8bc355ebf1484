"""Enqueue a few tasks for the Swift worker and print the results.

    python tasks/python/producer.py          # with a swift-celery worker consuming the same Redis

Configuration: see swift_tasks (CELERY_BROKER_URL / REDIS_URL, CELERY_RESULT_BACKEND, REDIS_PASSWORD,
SWIFT_CELERY_QUEUE). TIMEOUT (seconds, default 10) bounds each wait.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from celery import chain  # noqa: E402

from swift_tasks import add, app, echo, fail, mul, swift_queue, xsum  # noqa: E402


def main() -> int:
    timeout = float(os.environ.get("TIMEOUT", "10"))
    print(f"broker {app.conf.broker_url}, queue {swift_queue()}")

    print("add.delay(2, 3)                   ->", add.delay(2, 3).get(timeout=timeout))
    print("mul.apply_async((6, 7))           ->", mul.apply_async((6, 7)).get(timeout=timeout))
    print("xsum.delay([1, 2, 3, 4])          ->", xsum.delay([1, 2, 3, 4]).get(timeout=timeout))
    print("echo.delay(1, 'a', k='v')         ->", echo.delay(1, "a", k="v").get(timeout=timeout))
    result = app.send_task("tasks.add", args=(40, 2), queue=swift_queue())
    print("send_task('tasks.add', (40, 2))   ->", result.get(timeout=timeout))
    result = chain(add.s(1, 2), add.s(3), mul.s(10)).apply_async()
    print("chain(add(1,2), add(3), mul(10))  ->", result.get(timeout=timeout))
    try:
        fail.delay("boom").get(timeout=timeout)
    except ValueError as exc:
        print("fail.delay('boom')                -> raised", repr(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
