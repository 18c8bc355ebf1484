"""pytest plugin: Celery's integration suite with its session worker replaced by a swift-celery worker.

Celery's t/integration/conftest.py takes `celery_session_worker` from `celery.contrib.pytest`, which starts Celery's
own worker inside the test process. Loaded with `-p swift_worker_plugin` (before that conftest is imported), this
plugin puts in its place a fixture that starts the binary named by CELERY_SUITE_WORKER as a separate process on the
suite's broker and backend, waits until it answers a ping, and stops it (warm shutdown) after the session. Without
CELERY_SUITE_WORKER it changes nothing, so the same command runs the suite against Celery's own worker.
"""

import os
import signal
import subprocess
import time

import celery.contrib.pytest as celery_pytest
import pytest
from celery.utils.nodenames import anon_nodename

WORKER = os.environ.get("CELERY_SUITE_WORKER")


class SwiftWorker:
    """What the fixture yields: the worker's node name and process."""

    def __init__(self, hostname, process):
        self.hostname = hostname
        self.process = process


@pytest.fixture(scope="session")
def celery_session_worker(
    request,
    celery_session_app,
    celery_includes,
    celery_class_tasks,
    celery_worker_pool,
    celery_worker_parameters,
):
    """The suite's session worker: the Swift binary, on the session app's broker and backend."""
    # The client side still needs the task modules, as Celery's fixture imports them.
    for module in celery_includes:
        celery_session_app.loader.import_task_module(module)
    for class_task in celery_class_tasks:
        celery_session_app.register_task(class_task)
    # The node name Celery's own test worker takes (`gen<pid>@<host>`): test_inspect addresses the worker by it.
    hostname = anon_nodename()
    env = dict(os.environ)
    env["CELERY_BROKER_URL"] = celery_session_app.conf.broker_url
    env["CELERY_RESULT_BACKEND"] = celery_session_app.conf.result_backend
    log_path = os.environ.get("CELERY_SUITE_WORKER_LOG", os.devnull)
    # One at a time, as Celery's test worker runs (`start_worker(concurrency=1)`); test_inspect checks it.
    concurrency = os.environ.get("CELERY_SUITE_CONCURRENCY", "1")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [WORKER, "worker", "--hostname", hostname, "-c", concurrency, "--result-extended", "-l", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not celery_session_app.control.ping(destination=[hostname], timeout=0.5):
            if process.poll() is not None:
                raise RuntimeError(f"the Swift worker exited with {process.returncode}; its log: {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Swift worker did not answer a ping within 120 s; its log: {log_path}")
        yield SwiftWorker(hostname, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if WORKER:
    celery_pytest.celery_session_worker = celery_session_worker
