#!/usr/bin/env bash
# scripts/symbol-order.sh [BINARY] [OUT]
#
# Writes the function order compose/build-release.sh links the image's binary with (default OUT:
# compose/symbol-order.txt), so that the code an idle worker runs lies together instead of spread over the binary.
#
# Why: the kernel maps up to 64 KiB of cached file pages around every page a process touches, so each function
# run at start-up or while idle that sits alone among unused code costs up to 16 resident pages. With the functions
# in this order, start-up and the idle wait touch a few dense megabytes.
#
# How: a copy of BINARY (default .build-compose/out/swift-celery, which build-release.sh builds with one section per
# function) runs twice under valgrind's callgrind against a throw-away redis-server: a worker that starts, idles
# 5 s and stops; then one that also runs 20 tasks. Every function of the binary that ran is listed: first those of
# the idle run (by instructions, most first), then those only the tasks ran. Functions missing from the list keep
# the linker's order after them, so an old list only makes the layout less dense, never wrong. Takes about two
# minutes; rerun it after large changes (needs valgrind and redis-server).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

binary=${1:-.build-compose/out/swift-celery}
out=${2:-compose/symbol-order.txt}
for tool in valgrind redis-server python3 objcopy; do
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

# profile NAME TASKS: one worker under callgrind; idles 5 s, runs TASKS tasks, idles 2 s more, stops (SIGTERM).
profile() {
    local name=$1 tasks=$2 log="$dir/$1.log"
    valgrind --tool=callgrind --callgrind-out-file="$dir/$name.out" --compress-strings=no --compress-pos=no \
        --demangle=no "$binary" worker --broker "$url" -Q symbol-order -c 8 -n "symbol-order@localhost" \
        >"$log" 2>&1 &
    worker_pid=$!
    for _ in $(seq 600); do
        grep -q "worker ready" "$log" && break
        kill -0 "$worker_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.2
    done
    grep -q "worker ready" "$log" || { echo "symbol-order: the worker did not start" >&2; exit 1; }
    sleep 5
    for i in $(seq "$tasks"); do
        "$binary" send --broker "$url" -Q symbol-order --wait --timeout 60 tasks.add "$i" 1 >/dev/null
    done
    sleep 2
    kill -TERM "$worker_pid"
    wait "$worker_pid" || { echo "symbol-order: the worker exited with $?" >&2; exit 1; }
    worker_pid=
    echo "symbol-order: $name profiled" >&2
}
profile idle 0
profile tasks 20

python3 - "$binary" "$dir/idle.out" "$dir/tasks.out" "$out" <<'EOF'
import re
import sys

binary, idle_file, tasks_file, out = sys.argv[1:]


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


idle = functions(idle_file)
tasks = functions(tasks_file)
order = sorted(idle, key=lambda name: -idle[name])
extra = sorted((name for name in tasks if name not in idle), key=lambda name: -tasks[name])
with open(out, "w") as f:
    for name in order + extra:
        f.write(name + "\n")
print(f"symbol-order: {out}: {len(order)} functions of the idle run, then {len(extra)} more that tasks ran",
      file=sys.stderr)
EOF
