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
# Linked with lld so that the relative relocations are packed (DT_RELR, read by glibc ≥ 2.36, bookworm's): the
# 2.4 MB RELA table gold writes is read at every start and stays resident. Nothing loads this binary's symbols at
# run time, so it exports none (SwiftPM asks for --export-dynamic). Together: 3 MiB less RSS in an idle worker
# (docs/operations.md, Memory).
#
# Every function in a section of its own, linked in the order of compose/symbol-order.txt (scripts/symbol-order.sh
# writes it: what a ready worker runs while idle comes first, then its tasks' and shutdown's code, start-up's last):
# the kernel maps up to 64 KiB of file pages around each page a process touches, and the worker gives back the
# pages start-up used once it is ready (ExecutablePages), so code run while idle that lies together costs fewer
# resident pages (docs/operations.md, Memory). Functions the list does not name follow in the linker's order.
flags=(--static-swift-stdlib -Xswiftc -use-ld=lld -Xlinker -z -Xlinker pack-relative-relocs
    -Xlinker --no-export-dynamic
    -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections
    -Xlinker "--symbol-ordering-file=$PWD/compose/symbol-order.txt" -Xlinker --no-warn-symbol-ordering)
# SwiftPM does not know the link depends on the list: a list newer than the binary forces the link again.
linked="$(swift build -c release --scratch-path "$scratch" --show-bin-path "${flags[@]}")/swift-celery"
if [[ -e $linked && compose/symbol-order.txt -nt $linked ]]; then rm -f "$linked"; fi
swift build -c release --scratch-path "$scratch" --product swift-celery "${flags[@]}"
mkdir -p "$output"
cp "$linked" "$output/swift-celery"
echo "build-release: $output/swift-celery" >&2
