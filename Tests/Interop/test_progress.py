"""A handler's own states (Celery's `self.update_state`): Python's AsyncResult shows PROGRESS and its meta while the
task runs, then the result."""

from __future__ import annotations

import time


def test_progress_states_are_seen_by_python_while_the_task_runs(tasks):
    result = tasks.progress.delay(4, 0.4)
    seen = []
    deadline = time.monotonic() + 20
    while not result.ready() and time.monotonic() < deadline:
        if result.state == "PROGRESS":
            info = result.info
            if not seen or seen[-1] != info:
                seen.append(info)
        time.sleep(0.05)
    assert result.get(timeout=10) == 4
    assert seen, "no PROGRESS state was seen"
    assert all(info["total"] == 4 for info in seen), seen
    currents = [info["current"] for info in seen]
    assert currents == sorted(currents) and set(currents) <= {1, 2, 3, 4}, currents
    assert len(currents) >= 2, currents
    assert result.state == "SUCCESS" and result.info == 4
