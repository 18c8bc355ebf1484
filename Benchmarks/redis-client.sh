#!/usr/bin/env bash
# Benchmarks/redis-client.sh — our Redis client on one connection against redis-benchmark, on a throw-away
# redis-server (no persistence) on a free loopback port. Prints a table with ratios (ours / redis-benchmark).
#
#   redis-benchmark -p PORT -t lpush,rpop,ping -n 200000 -P 16 -q           (50 clients, 16 pipelined each)
#   redis-benchmark -p PORT -c 1 -P 1 -t ping -n 50000 --csv                 (one client, one at a time)
#   RedisClientBenchmark redis://127.0.0.1:PORT/0 200000 1000 50000           (one connection; batches of 1,000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

total=200000
batch=1000
pings=50000

echo "building RedisClientBenchmark (release)..." >&2
swift build -c release --package-path RedisClientBenchmark >&2
binary="$(swift build -c release --package-path RedisClientBenchmark --show-bin-path)/RedisClientBenchmark"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
dir=$(mktemp -d "${TMPDIR:-/tmp}/swift-celery-bench.XXXXXX")
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$dir" --daemonize no \
    --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
done

echo "redis-benchmark -p $port -t lpush,rpop,ping -n $total -P 16 -q" >&2
pipelined=$(redis-benchmark -p "$port" -t lpush,rpop,ping -n "$total" -P 16 -q | tr '\r' '\n' | grep 'requests per second')
echo "$pipelined" >&2
echo "redis-benchmark -p $port -c 1 -P 1 -t ping -n $pings --csv" >&2
single=$(redis-benchmark -p "$port" -c 1 -P 1 -t ping -n "$pings" --csv)
echo "$single" >&2
echo "$binary redis://127.0.0.1:$port/0 $total $batch $pings" >&2
ours=$("$binary" "redis://127.0.0.1:$port/0" "$total" "$batch" "$pings")
echo "$ours" >&2

rb() { echo "$pipelined" | awk -v t="$1:" '$1 == t { print int($2) }'; }
# --csv columns: test, rps, avg, min, p50, p95, p99, max (latencies in ms); PING_MBULK is the RESP-array form.
rb_single() { echo "$single" | tr -d '"' | awk -F, -v c="$1" '$1 == "PING_MBULK" { print $c }'; }
our() { echo "$ours" | awk -v n="$1" '$1 == n { print $2 }'; }

rb_ping_p50_us=$(awk -v ms="$(rb_single 5)" 'BEGIN { printf "%d", ms * 1000 }')
rb_ping_p99_us=$(awk -v ms="$(rb_single 7)" 'BEGIN { printf "%d", ms * 1000 }')

row() { # name, ours, redis-benchmark, unit; the ratio is ours / redis-benchmark
    awk -v n="$1" -v o="$2" -v r="$3" -v u="$4" 'BEGIN { printf "| %-44s | %12s | %15s | %5.0f%% |\n", n " (" u ")", o, r, 100 * o / r }'
}
echo
echo "| measure | swift-celery (1 connection) | redis-benchmark | ratio |"
echo "|---|---:|---:|---:|"
row "LPUSH pipelined, batches of $batch vs -P 16" "$(our lpush_pipelined_ops)" "$(rb LPUSH)" "ops/s"
row "RPOP pipelined, batches of $batch vs -P 16" "$(our rpop_pipelined_ops)" "$(rb RPOP)" "ops/s"
row "PING one at a time vs -c 1 -P 1" "$(our ping_ops)" "$(rb_single 2 | cut -d. -f1)" "ops/s"
row "PING p50 vs -c 1 -P 1" "$(our ping_p50_us)" "$rb_ping_p50_us" "µs"
row "PING p99 vs -c 1 -P 1" "$(our ping_p99_us)" "$rb_ping_p99_us" "µs"
