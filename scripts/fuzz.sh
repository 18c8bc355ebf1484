#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] [TARGET...] — builds the libFuzzer targets in Fuzz/ and runs each for SECONDS
# (default 60) on its seed corpus in Fuzz/corpus/<target>/. Exit status 1 when a target crashes (or does not
# build); the crashing input is left in Fuzz/artifacts/<target>/ and its bytes are printed.
#
# Targets: resp (the RESP decoder), json (the JSON layer), task-message (the Celery message decoder).
# New inputs libFuzzer finds go to Fuzz/.work/corpus/<target>/ (not the repository's seed corpus).
# FUZZ_JOBS=N runs N targets at a time (default 2). FUZZ_BUILD=debug builds without optimization (faster build).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../Fuzz" || exit 1

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]} > 0)) || targets=(resp json task-message)
mode=${FUZZ_BUILD:-release}

product() {
    case $1 in
    resp) echo FuzzRESP ;;
    json) echo FuzzJSON ;;
    task-message) echo FuzzTaskMessage ;;
    *) return 1 ;;
    esac
}

# -Xcc -fsanitize=address: the C targets too, so the jansson arena poisons what it has not handed out.
flags=(-c "$mode" -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library -Xcc -fsanitize=address)
for target in "${targets[@]}"; do
    name=$(product "$target") || {
        echo "fuzz: unknown target $target (resp, json, task-message)" >&2
        exit 2
    }
    echo "fuzz: building $name ($mode, -sanitize=fuzzer,address)" >&2
    swift build "${flags[@]}" --product "$name" >&2 || {
        echo "fuzz: $name does not build" >&2
        exit 1
    }
done
bin=$(swift build "${flags[@]}" --show-bin-path)

run() {
    local target=$1 name log status
    name=$(product "$target")
    mkdir -p ".work/corpus/$target" "artifacts/$target"
    log=".work/$target-$mode.log"
    ASAN_OPTIONS=detect_leaks=0 "$bin/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
        ".work/corpus/$target" "corpus/$target" >"$log" 2>&1
    status=$?
    local runs
    runs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    if ((status != 0)); then
        echo "fuzz: $target CRASHED after ${runs:-?} runs (exit $status); log $PWD/$log:" >&2
        grep -A 30 -E '==ERROR|Fatal error|Precondition failed|deadly signal|SUMMARY' "$log" | head -60 >&2
        for artifact in "artifacts/$target"/*; do
            [[ -f $artifact ]] && echo "input $artifact: $(head -c 300 "$artifact" | od -An -c | head -8)" >&2
        done
        return 1
    fi
    echo "fuzz: $target ok: ${runs:-?} runs in ${seconds} s, corpus $(ls ".work/corpus/$target" | wc -l) new + $(ls "corpus/$target" | wc -l) seed inputs"
}

mkdir -p .work
failed=()
jobs_max=${FUZZ_JOBS:-2}
declare -A pids=()
for target in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n; done
    run "$target" &
    pids[$target]=$!
done
for target in "${!pids[@]}"; do
    wait "${pids[$target]}" || failed+=("$target")
done
if ((${#failed[@]} > 0)); then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran ${seconds} s without a crash"
