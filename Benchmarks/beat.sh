#!/usr/bin/env bash
# Benchmarks/beat.sh — swift-celery beat with many entries on a throw-away redis-server (no persistence) on a free
# loopback port: beat's CPU time and how far each message lags behind its due time.
#
#   Benchmarks/beat.sh [ENTRIES] [INTERVAL_SECONDS] [ROUNDS]      default: 10000 entries, every 60 s, 3 rounds
#   Benchmarks/beat.sh --ci                                        short: 1000 entries, every 2 s, 2 rounds
#
# Every entry has the same interval, so all of them fall due at the same instant, each round: the worst case.
# Lag = when beat pushed the message minus the slot's due time (from beat's history records). CPU = user + system
# time of the beat process (from /proc), over the whole run including start-up and the first sync.
# SWIFT_CELERY_BIN picks the binary (default: a release build, made here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${1:-}" == "--ci" ]]; then
    entries=1000 interval=2 rounds=2
else
    entries=${1:-10000} interval=${2:-60} rounds=${3:-3}
fi

if [[ -z "${SWIFT_CELERY_BIN:-}" ]]; then
    echo "building swift-celery (release)..." >&2
    swift build -c release --product swift-celery >&2
    SWIFT_CELERY_BIN="$(swift build -c release --show-bin-path)/swift-celery"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
dir=$(mktemp -d "${TMPDIR:-/tmp}/swift-celery-beat-bench.XXXXXX")
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$dir" --daemonize no \
    --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
server=$!
beat=""
cleanup() {
    [[ -n "$beat" ]] && kill "$beat" 2>/dev/null && wait "$beat" 2>/dev/null
    kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
    [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
done

python3 - "$entries" "$interval" > "$dir/beat.json" <<'PY'
import json, sys
n, every = int(sys.argv[1]), float(sys.argv[2])
print(json.dumps({"entries": [{"name": f"e{i}", "task": "tasks.add", "schedule": every, "args": [i, 1],
                               "options": {"queue": f"bench{i % 10}"}} for i in range(n)]}))
PY

total=$((entries * rounds))
"$SWIFT_CELERY_BIN" beat --schedule "$dir/beat.json" --broker "redis://127.0.0.1:$port/0" \
    --history-limit "$total" --loglevel warning 2>"$dir/beat.log" &
beat=$!
started=$(date +%s.%N)
deadline=$(( $(date +%s) + rounds * ${interval%.*} + 180 ))
while (( $(redis-cli -p "$port" llen swift-celery:beat:history) < total )); do
    if (( $(date +%s) > deadline )) || ! kill -0 "$beat" 2>/dev/null; then
        echo "beat did not send $total messages in time" >&2; cat "$dir/beat.log" >&2; exit 1
    fi
    sleep 0.5
done
ticks=$(getconf CLK_TCK)
read -r utime stime rss <<<"$(awk '{ print $14, $15, $24 }' "/proc/$beat/stat")"
ended=$(date +%s.%N)
kill "$beat"; wait "$beat" 2>/dev/null || true; beat=""
redis-cli -p "$port" --raw lrange swift-celery:beat:history 0 -1 > "$dir/history.jsonl"

python3 - "$dir/history.jsonl" "$entries" "$interval" "$rounds" "$utime" "$stime" "$ticks" "$rss" "$started" "$ended" <<'PY'
import json, statistics, sys
path, n, every, rounds, utime, stime, ticks, rss, started, ended = sys.argv[1:]
lags = sorted(r["sent_ms"] - r["due_ms"] for r in map(json.loads, open(path)) if r)
def pct(p): return lags[min(len(lags) - 1, int(len(lags) * p))]
cpu = (int(utime) + int(stime)) / int(ticks)
wall = float(ended) - float(started)
page = 4096
print(f"| entries | interval | rounds | messages | wall | beat CPU | CPU per round | RSS | lag p50 | lag p99 | lag max |")
print(f"|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| {int(n):,} | {every} s | {rounds} | {len(lags):,} | {wall:.0f} s | {cpu:.2f} s | {cpu / int(rounds):.2f} s "
      f"| {int(rss) * page / 2**20:.0f} MiB | {pct(0.5)} ms | {pct(0.99)} ms | {lags[-1]} ms |")
PY
