#!/usr/bin/env bash
# scripts/symbol-order.sh [BINARY] [OUT]
#
# Writes the function order compose/build-release.sh links the image's binary with (default OUT:
# compose/symbol-order.txt), so that the code an idle worker runs lies together instead of spread over the binary.
#
# Why: the kernel maps up to 64 KiB of cached file pages around every page a process touches, so each function
# run while idle that sits alone among unused code costs up to 16 resident pages; and a second after it is ready
# the worker gives back every page of its executable that start-up used (Sources/Celery/ExecutablePages.swift), so
# only what it runs again comes back. With the functions in this order, the idle wait touches a few dense pages.
#
# How: a copy of BINARY (default .build-compose/out/swift-celery, which build-release.sh builds with one section per
# function) runs under valgrind's callgrind against a throw-away redis-server, its profile dumped at the end of each
# phase: start-up (to 3 s after "worker ready"), 8 s idle, 20 tasks, the warm shutdown. The list holds every
# function of the binary that ran: the idle spell's (by instructions, most first), then those only the tasks ran,
# then the shutdown's, then start-up's. Functions missing from the list keep the linker's order after them, so an
# old list only makes the layout less dense, never wrong. Takes under a minute; rerun it after large changes (needs
# valgrind and redis-server). build-release.sh links again when the list is newer than its binary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

binary=${1:-.build-compose/out/swift-celery}
out=${2:-compose/symbol-order.txt}
for tool in valgrind callgrind_control redis-server python3 objcopy; do
    command -v "$tool" >/dev/null || { echo "symbol-order: $tool is needed" >&2; exit 1; }
done
[[ -x $binary ]] || { echo "symbol-order: no binary at $binary (run compose/build-release.sh)" >&2; exit 1; }

dir=$(mktemp -d)
# valgrind 3.19 cannot read the DWARF 5 of some C objects in the binary and gives up: profile a copy without debug
# information (the symbol table, which is all the list needs, stays).
objcopy --strip-debug "$binary" "$dir/swift-celery"
binary="$dir/swift-celery"
worker_pid=
cleanup() {
    [[ -n $worker_pid ]] && kill -9 "$worker_pid" 2>/dev/null
    kill "${scratch_redis_pid:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
source scripts/lib.sh
start_scratch_redis "$dir"
url="redis://127.0.0.1:$scratch_redis_port/0"

# One worker under callgrind, its profile dumped at each phase's end: start-up (to 3 s after "worker ready": the
# worker releases its start-up pages after 1 s), an idle spell of 8 s, 20 tasks, then the warm shutdown.
valgrind --tool=callgrind --callgrind-out-file="$dir/profile.out" --compress-strings=no --compress-pos=no \
    --demangle=no "$binary" worker --broker "$url" -Q symbol-order -c 8 -n "symbol-order@localhost" \
    >"$dir/worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 600); do
    grep -q "worker ready" "$dir/worker.log" && break
    kill -0 "$worker_pid" 2>/dev/null || { cat "$dir/worker.log" >&2; exit 1; }
    sleep 0.2
done
grep -q "worker ready" "$dir/worker.log" || { echo "symbol-order: the worker did not start" >&2; exit 1; }
# dump PHASE: writes what ran since the last dump to profile.out.N and counts afresh.
dump() {
    callgrind_control --dump="$1" "$worker_pid" >/dev/null 2>&1
    echo "symbol-order: $1 profiled" >&2
}
sleep 3
dump start-up
sleep 8
dump idle
for i in $(seq 20); do
    "$binary" send --broker "$url" -Q symbol-order --wait --timeout 60 tasks.add "$i" 1 >/dev/null
done
dump tasks
kill -TERM "$worker_pid"
wait "$worker_pid" || { echo "symbol-order: the worker exited with $?" >&2; exit 1; }
worker_pid=
echo "symbol-order: shutdown profiled" >&2

python3 - "$binary" "$dir" "$out" <<'EOF'
import glob
import re
import sys

binary, folder, out = sys.argv[1:]


def functions(path):
    """Self cost (instructions) of each function of `binary` that ran, from a callgrind file written without
    name compression. The cost line after `calls=` is the call's inclusive cost: not counted."""
    costs, obj, fn, call_cost = {}, None, None, False
    for line in open(path, encoding="utf-8", errors="replace"):
        first = line[:1]
        if first.isdigit() or first in "+-*":
            if call_cost:
                call_cost = False
            elif fn is not None:
                parts = line.split()
                if len(parts) >= 2:
                    costs[fn] += int(parts[1])
            continue
        call_cost = False
        if line.startswith("ob="):
            obj = line[3:].strip()
        elif line.startswith("fn="):
            # callgrind marks the levels of a recursion with 'N after the name.
            name = re.sub(r"'[0-9]+$", "", line[3:].strip())
            fn = name if obj == binary and not name.startswith("0x") else None
            if fn is not None:
                costs.setdefault(fn, 0)
        elif line.startswith("calls="):
            call_cost = True
    return costs


# The dumps in the order written: profile.out.1 (start-up), .2 (idle), .3 (tasks); profile.out (shutdown).
parts = sorted(glob.glob(f"{folder}/profile.out.*"), key=lambda path: int(path.rsplit(".", 1)[1]))
if len(parts) != 3:
    sys.exit(f"symbol-order: expected 3 dumps, found {len(parts)}: {parts}")
start_up, idle, tasks = (functions(path) for path in parts)
shutdown = functions(f"{folder}/profile.out")
# What a ready worker runs again comes first, densely: the idle spell's functions, then the tasks', then the warm
# shutdown's; start-up's (released a second after the worker is ready) last.
order, seen = [], set()
for phase in (idle, tasks, shutdown, start_up):
    for name in sorted(phase, key=lambda name: -phase[name]):
        if name not in seen:
            seen.add(name)
            order.append(name)
with open(out, "w") as f:
    for name in order:
        f.write(name + "\n")
print(f"symbol-order: {out}: {len(order)} functions, the idle spell's {len(idle)} first", file=sys.stderr)
EOF
