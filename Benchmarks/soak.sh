#!/usr/bin/env bash
# Benchmarks/soak.sh [SECONDS] [--restart-every S] [--rate N] — mixed load on a swift-celery worker while its
# Redis (AOF, fsync always) is restarted every 5 minutes (every 15 s for runs under 5 minutes); reports the RSS
# slope and fd counts and fails if a task is lost. Default 3600 s; CI runs `Benchmarks/soak.sh 60`.
# Uses .build/release/swift-celery if built, else .build/debug (SWIFT_CELERY_BIN overrides), and the Python of
# .venv-interop (PYTHON overrides; it needs redis-py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-.venv-interop/bin/python}
[[ -x $python ]] || python=python3
exec "$python" Benchmarks/soak.py "$@"
