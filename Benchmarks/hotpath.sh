#!/usr/bin/env bash
# Benchmarks/hotpath.sh [--update-baseline] [BINARY]
#
# The regression benchmark CI runs: instructions (valgrind --tool=callgrind) and heap allocations (valgrind
# --tool=dhat) per task on the worker's CPU path without Redis (`swift-celery hot-path-benchmark`: pop reply →
# TaskMessage → handler → result payload → result and ack commands). Counts, not time: the same binary and input
# give the same counts whatever else the machine does.
#
# Each figure is (count with 2,000 tasks − count with 0 tasks) / 2,000, so start-up is not in it. Stages:
#   inputs  the benchmark making its own input (subtracted from the others)
#   decode  parsing the pop reply and decoding each envelope (jansson)
#   run     looking up and running the handler, making and serializing the result meta
#   encode  encoding the EVALSHA of the results and the HDEL/ZREM of the acks
#   task    decode + run + encode: one task through the worker
# The figures are compared with Benchmarks/hotpath-baseline.json (measured with the binary compose/build-release.sh
# makes, as CI does); the script fails when a count is more than 1.5 times its baseline: a gross regression, never
# a matter of timing. --update-baseline writes the new figures instead.
#
# BINARY defaults to .build-compose/out/swift-celery, built with compose/build-release.sh when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

update=0
if [[ ${1:-} == --update-baseline ]]; then
    update=1
    shift
fi
binary=${1:-.build-compose/out/swift-celery}
if [[ ! -x $binary ]]; then
    bash compose/build-release.sh >&2
fi
command -v valgrind >/dev/null || { echo "hotpath: valgrind is not installed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# valgrind 3.19 cannot read the DWARF the Swift toolchain writes ("Possibly corrupted debuginfo file"): count a copy
# without debug sections (the code is the same).
strip --strip-debug -o "$work/swift-celery" "$binary"

tasks=2000
# Refuses a run that did not do the work it was asked for: its report must name the phase and the task count, and
# with tasks, show the phase's output (decoded messages, handler results, payload and command bytes).
check_report() { # phase tasks stdout-file
    python3 - "$@" <<'PY' || exit 1
import json, sys
phase, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    report = json.loads(open(path).read())
except ValueError:
    sys.exit(f"hotpath: --phase {phase} --tasks {n} printed no report: {open(path).read()[:200]!r}")
if report.get("tasks") != n or report.get("phase") != phase:
    sys.exit(f"hotpath: asked for --phase {phase} --tasks {n}, the report says {report}")
needed = {"inputs": ["payload_bytes"], "decode": ["result_sum"], "run": ["result_sum", "payload_bytes"],
          "all": ["result_sum", "payload_bytes", "command_bytes"]}[phase]
empty = [field for field in needed if n > 0 and not report.get(field)]
if empty:
    sys.exit(f"hotpath: --phase {phase} --tasks {n} measured nothing ({', '.join(empty)} zero): {report}")
PY
}

measure() { # tool phase tasks -> count
    local tool=$1 phase=$2 n=$3 out="$work/$1-$2-$3.out"
    if [[ $tool == callgrind ]]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" "$work/swift-celery" hot-path-benchmark \
            --tasks "$n" --phase "$phase" >"$work/stdout" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
        check_report "$phase" "$n" "$work/stdout"
        sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$work/log"
    else
        valgrind --tool=dhat --dhat-out-file="$out" "$work/swift-celery" hot-path-benchmark \
            --tasks "$n" --phase "$phase" >"$work/stdout" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }
        check_report "$phase" "$n" "$work/stdout"
        sed -n 's/^==[0-9]*== Total: *[0-9,]* bytes in \([0-9,]*\) blocks$/\1/p' "$work/log" | tr -d ,
    fi
}

counts=()
for tool in callgrind dhat; do
    counts+=("$(measure "$tool" all 0)")
    for phase in inputs decode run all; do
        counts+=("$(measure "$tool" "$phase" "$tasks")")
    done
done

python3 - "$update" "$tasks" "${counts[@]}" <<'EOF'
import json, sys
from pathlib import Path

update = sys.argv[1] == "1"
tasks = int(sys.argv[2])
counts = list(map(int, sys.argv[3:]))
figures = {}
for kind, (base, inputs, decode, run, whole) in (("instructions", counts[:5]), ("allocations", counts[5:])):
    inputs, decode, run, whole = ((c - base) / tasks for c in (inputs, decode, run, whole))
    figures[kind] = {"decode": round(decode - inputs, 1), "run": round(run - decode, 1),
                     "encode": round(whole - run, 1), "task": round(whole - inputs, 1)}
path = Path("Benchmarks/hotpath-baseline.json")
baseline = json.loads(path.read_text()) if path.exists() else None
print("| stage | instructions per task | baseline | × | allocations per task | baseline | × |")
print("|---|---:|---:|---:|---:|---:|---:|")
worst = []
for stage in ("decode", "run", "encode", "task"):
    cells = [stage]
    for kind in ("instructions", "allocations"):
        value = figures[kind][stage]
        base = baseline[kind][stage] if baseline else None
        ratio = value / base if base else None
        cells += [f"{value:,.1f}", f"{base:,.1f}" if base else "–", f"{ratio:.2f}" if ratio else "–"]
        # A stage of under one allocation per task (the per-batch encoding) is too small to compare.
        if ratio and ratio > 1.5 and base >= 1:
            worst.append(f"{kind} of {stage}: {value:,.1f} per task, {ratio:.2f}× the baseline {base:,.1f}")
    print("| " + " | ".join(cells) + " |")
if update:
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nwrote {path}")
elif worst:
    print("\nhotpath: more than 1.5× the baseline:\n  " + "\n  ".join(worst), file=sys.stderr)
    sys.exit(1)
EOF
