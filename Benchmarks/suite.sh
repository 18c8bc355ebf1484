#!/usr/bin/env bash
# Benchmarks/suite.sh [suite.py arguments...]   (--quick: small counts; --only drain latency memory eta startup beat ceiling netlag)
#
# Starts a throw-away redis-server on a free port (no persistence), builds the release swift-celery binary if it
# is missing, runs Benchmarks/suite.py (swift-celery vs Python Celery and the Redis ceiling), stops the server.
# BENCH_SCRIPT names another Python script to run the same way (Benchmarks/worker-vs-celery.sh does).
# Python: $PYTHON, else .venv-interop/bin/python (created with celery[redis]==5.7.0 as scripts/test.sh does).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-.venv-interop/bin/python}
if ! "$python" -c 'import celery, redis' >/dev/null 2>&1; then
    echo "creating .venv-interop" >&2
    python3 -m venv .venv-interop
    .venv-interop/bin/python -m pip install --quiet --disable-pip-version-check 'celery[redis]==5.7.0' pytest </dev/null
    python=.venv-interop/bin/python
fi

if [[ -z ${SWIFT_CELERY_BIN:-} ]]; then
    echo "building swift-celery (release)" >&2
    swift build -c release --product swift-celery >&2
fi

source scripts/lib.sh
dir=$(mktemp -d)
cleanup() {
    kill "${scratch_redis_pid:-}" 2>/dev/null || true
    wait "${scratch_redis_pid:-}" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
start_scratch_redis "$dir"
port=$scratch_redis_port

"$python" "${BENCH_SCRIPT:-Benchmarks/suite.py}" --redis-url "redis://127.0.0.1:$port/0" ${SWIFT_CELERY_BIN:+--swift-bin "$SWIFT_CELERY_BIN"} "$@"
