"""kombu's message compression: Python Celery's `apply_async(compression=...)` / `task_compression` reach the Swift
worker compressed (zlib, bzip2, lzma) and run; a body that expands past --max-message-size is refused with
LimitExceeded, and the worker carries on."""

from __future__ import annotations

import pytest

from conftest import WorkerProcess, stopped_cleanly, unique


@pytest.mark.parametrize("method", ["gzip", "zlib", "bzip2", "lzma"])
def test_compressed_messages_run(app, tasks, redis_client, worker, method):
    result = tasks.add.apply_async((20, 22), compression=method)
    assert result.get(timeout=15) == 42
    # Large arguments too (a body that spans several of the decompressor's 64 KiB chunks).
    text = "swift " * 50_000
    assert tasks.echo.apply_async((text,), compression=method).get(timeout=15) == {"args": [text], "kwargs": {}}


def test_the_app_wide_setting_compresses_every_message(redis_url, worker):
    from swift_tasks import make_app

    app = make_app(unique("compressing-client"), broker=redis_url, backend=redis_url, queue=worker.queue)
    app.conf.task_compression = "bzip2"
    try:
        assert app.tasks["tasks.mul"].delay(6, 7).get(timeout=15) == 42
    finally:
        app.close()


@pytest.mark.swift_only
def test_a_body_expanding_past_the_limit_is_refused(redis_url, redis_client):
    queue = unique("interop-compression-limit")
    worker = WorkerProcess("swift", redis_url, queue=queue, name=f"{unique('limit')}@localhost",
                           flags=["--max-message-size", "64k"]).start()
    from swift_tasks import make_app

    app = make_app(unique("compression-limit-client"), broker=redis_url, backend=redis_url, queue=queue)
    try:
        # 1 MB of one letter compresses to about 1 KB: under the limit on the wire, over it once decompressed.
        bomb = app.tasks["tasks.echo"].apply_async(("a" * 1_000_000,), compression="gzip")
        with pytest.raises(Exception) as raised:
            bomb.get(timeout=15)
        assert type(raised.value).__name__ == "LimitExceeded", repr(raised.value)
        assert "decompresses to more than 65536 bytes" in str(raised.value)
        assert redis_client.llen("swift-celery:dead-letter") >= 1
        # The worker carries on.
        assert app.tasks["tasks.add"].apply_async((1, 2), compression="gzip").get(timeout=15) == 3
    finally:
        app.close()
        stopped_cleanly(worker)
