"""The open-loop probe in C that the benchmark suite times loads with (Benchmarks/open_loop_probe.c, driven by
`suite.c_open_loop`): every message it sends is kombu's envelope with the id it reports on, and every result is
counted once, or as missing. Runs against the test Redis, no worker."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "Benchmarks"))
import suite  # noqa: E402

from conftest import unique  # noqa: E402

pytestmark = [
    pytest.mark.swift_only,
    pytest.mark.skipif(suite.c_compiler() is None, reason="no C compiler"),
]


def test_probe_alone_times_every_message(redis_url, redis_client):
    # With `itself` the probe PUBLISHes each message's result channel itself: all of them come back, timed.
    queue = unique("probe-floor")
    latencies, achieved, missing = suite.c_open_loop(redis_url, 2000, 0.5, itself=True, settle=5, queue=queue)
    assert missing == 0
    assert 900 <= len(latencies) <= 1001
    assert 1800 <= achieved <= 2002
    assert all(0 < value < 5000 for value in latencies)
    assert not redis_client.exists(queue)


def test_probe_counts_what_no_worker_answers_and_sends_kombu_envelopes(redis_url, redis_client):
    # No worker consumes this queue: nothing is timed, every message is missing, and each one in the list is the
    # envelope the suite's Python probe sends, its id ending in the message's number.
    queue = unique("probe-unconsumed")
    try:
        latencies, achieved, missing = suite.c_open_loop(redis_url, 1000, 0.3, settle=0.2, queue=queue)
        sent = round(achieved * 0.3)
        assert latencies == []
        assert missing == sent and sent >= 250
        messages = [json.loads(m) for m in redis_client.lrange(queue, 0, -1)]
        assert len(messages) == sent
        for index, message in enumerate(reversed(messages)):  # LPUSH: the first sent is last in the list
            task_id = message["headers"]["id"]
            assert int(task_id[-12:], 16) == index
            assert message["headers"]["task"] == "tasks.add"
            assert message["properties"]["correlation_id"] == task_id
    finally:
        redis_client.delete(queue)
