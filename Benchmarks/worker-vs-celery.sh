#!/usr/bin/env bash
# Benchmarks/worker-vs-celery.sh [worker_vs_celery.py arguments...]
#
# The drain comparison alone (Python Celery prefork vs swift-celery): Benchmarks/worker_vs_celery.py run by
# Benchmarks/suite.sh, which starts the throw-away redis-server, builds the release binary and finds the Python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BENCH_SCRIPT=Benchmarks/worker_vs_celery.py exec bash Benchmarks/suite.sh "$@"
