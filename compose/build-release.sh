#!/usr/bin/env bash
# Builds the release binary that the container image ships: compose/build-release.sh [OUTPUT_DIR]
#
# compose/Dockerfile runs exactly this script in its build stage, and the test suite runs it too (through
# Tests/Interop/test_compose.py when SWIFT_CELERY_COMPOSE_BUILD=1, which scripts/test.sh sets), so the command
# that makes the image's binary is the one CI checks. The Swift runtime is linked statically; the binary needs
# only libc and libjansson at run time (Debian: libjansson4).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
output=${1:-.build-compose/out}

# Its own build folder, so that a release binary made here is never mistaken for .build/release (the
# interop tests and the benchmarks use that one).
scratch=.build-compose
swift build -c release --scratch-path "$scratch" --product swift-celery --static-swift-stdlib
mkdir -p "$output"
cp "$(swift build -c release --scratch-path "$scratch" --show-bin-path)/swift-celery" "$output/swift-celery"
echo "build-release: $output/swift-celery" >&2
