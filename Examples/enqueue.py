"""Enqueue the example package's tasks from Python and print what the Swift worker returns.

    cd Examples
    swift build -c release
    .build/release/report-worker stubs --module report_tasks --queue reports > report_tasks.py
    .build/release/report-worker worker -Q reports &
    python enqueue.py [REGION]   # CELERY_BROKER_URL / REDIS_URL / REDIS_PASSWORD as for the worker

Needs `celery[redis]` 5.x.
"""

from __future__ import annotations

import sys

from report_tasks import checksum, region_summary, total


def main() -> int:
    region = sys.argv[1] if len(sys.argv) > 1 else "north"
    print("total:", total.delay([3, 4.5], tax=0.2).get(timeout=10))
    print("checksum:", checksum.delay("hello", 1000).get(timeout=10))
    print("region_summary:", region_summary.delay(region).get(timeout=10))
    print("region_summary again:", region_summary.delay(region).get(timeout=10))
    return 0


if __name__ == "__main__":
    sys.exit(main())
