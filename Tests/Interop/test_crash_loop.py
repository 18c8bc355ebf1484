"""The crash guard: under --acks-late, a handler that traps the worker process is failed with WorkerLostError after
--max-crashes crashes, instead of coming back after each restart and crashing every worker in turn."""

import time

import pytest

from conftest import WorkerProcess, unique

pytestmark = pytest.mark.swift_only

MAX_CRASHES = 3
INNOCENT = 300


def test_a_handler_that_traps_fails_after_three_crashes_and_the_queue_drains(redis_url, redis_client, monkeypatch):
    from billiard.exceptions import WorkerLostError
    from swift_tasks import make_app

    # The runtime's backtracer would spend seconds on each trap; a supervisor restarts the worker either way.
    monkeypatch.setenv("SWIFT_BACKTRACE", "enable=no")
    queue = unique("interop-crash")
    errback_key = unique("crash-errback")
    app = make_app("crash-client", broker=redis_url, backend=redis_url, queue=queue)
    add, crash, incr, sleep = (app.tasks[f"tasks.{name}"] for name in ("add", "crash", "incr", "sleep"))
    innocent = [add.delay(i, 1) for i in range(INNOCENT // 2)]
    # Tasks still running when the poison one traps at once: counted at its first crash, then run alone, not
    # failed with it.
    beside = [sleep.delay(0.2) for _ in range(6)]
    poison = crash.apply_async((True,), link_error=incr.si(errback_key))
    beside += [sleep.delay(0.2) for _ in range(6)]
    innocent += [add.delay(i, 1) for i in range(INNOCENT // 2, INNOCENT)]
    harmless = crash.delay(False)

    def finished(result):
        return redis_client.exists(f"celery-task-meta-{result.id}")

    flags = ["--acks-late", "--visibility-timeout=1", f"--max-crashes={MAX_CRASHES}"]
    crashes, logs = 0, []
    deadline = time.monotonic() + 120
    try:
        # The test is the supervisor: it restarts the worker each time it dies.
        while time.monotonic() < deadline:
            worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('crash')}@localhost",
                                   flags=flags, concurrency=4).start()
            while worker.alive() and time.monotonic() < deadline:
                if all(finished(r) for r in [poison, harmless, *beside, *innocent]):
                    break
                time.sleep(0.1)
            if worker.alive():
                assert worker.stop() == 0
                logs.append(worker.log())
                break
            crashes += 1
            logs.append(worker.log())
            assert "Index out of range" in worker.log(), worker.log()
            assert crashes <= MAX_CRASHES, "the poison task kept crashing workers\n" + "\n".join(logs)
        print("\n".join(logs))  # shown when an assertion below fails
        assert crashes == MAX_CRASHES
        with pytest.raises(WorkerLostError):
            poison.get(timeout=10)
        assert poison.state == "FAILURE"
        assert "failing it with WorkerLostError" in logs[-1]
        assert [r.get(timeout=10) for r in innocent] == [i + 1 for i in range(INNOCENT)]
        assert harmless.get(timeout=10) is False
        assert [r.get(timeout=10) for r in beside] == [0.2] * len(beside)
        assert any("running it alone" in log for log in logs[1:]), "the tasks beside it ran alone"
        assert int(redis_client.get(errback_key) or 0) == 1, "the errback ran once"
        dead = redis_client.lrange("swift-celery:dead-letter", 0, 999)
        assert any(poison.id.encode() in entry for entry in dead)
        assert redis_client.llen(queue) == 0
        assert not any(poison.id.encode() in value for value in redis_client.hvals("unacked"))
    finally:
        redis_client.delete(errback_key)
        app.close()
