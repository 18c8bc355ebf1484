"""Raw kombu/Celery envelopes (docs/protocol.md §1.1, §2.1), built by hand so tests can break one thing at a time."""

from __future__ import annotations

import base64
import json
import socket
import time
import uuid

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def envelope(task: str, args=(), kwargs=None, *, task_id: str | None = None, queue: str = "celery",
             body: list | None = None) -> dict:
    """A valid envelope, key for key as kombu 5.7 LPUSHes it for `app.send_task(task, args, kwargs, queue=queue)`."""
    task_id = task_id or str(uuid.uuid4())
    kwargs = {} if kwargs is None else kwargs
    payload = [list(args), kwargs, dict(EMBED)] if body is None else body
    return {
        "body": base64.b64encode(json.dumps(payload).encode("utf-8")).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(args),
            "kwargsrepr": repr(kwargs),
            "origin": f"gen{0}@{socket.gethostname()}",
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def encode(env: dict) -> bytes:
    """The list element: JSON text as kombu writes it (json.dumps with default separators)."""
    return json.dumps(env).encode("utf-8")


def task_id_of(env: dict) -> str:
    return env["headers"]["id"]


def wait_for(predicate, timeout: float, interval: float = 0.05):
    """Polls predicate() until it returns something truthy; returns that, or the last falsy value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
