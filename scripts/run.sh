#!/usr/bin/env bash
# Builds and runs swift-celery on this machine: scripts/run.sh [swift-celery arguments...]
#
# Installs missing system packages (Debian, as root or with sudo), builds in release mode, and runs
# .build/release/swift-celery with the arguments given (`worker` when none are). When no broker is given
# (no -b/--broker argument, neither CELERY_BROKER_URL nor REDIS_URL set) and nothing listens on 127.0.0.1:6379,
# it starts a local redis-server with its data in .run/redis and stops it when swift-celery exits.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
source scripts/lib.sh

ensure_swift || exit 1
ensure_system_packages || exit 1

section "build: swift build -c release"
swift build -c release || exit 1

if (($# == 0)); then
    set -- worker
fi

broker_given=false
for argument in "$@"; do
    case $argument in
    -b | --broker | --broker=*) broker_given=true ;;
    esac
done
if [[ -n ${CELERY_BROKER_URL:-} || -n ${REDIS_URL:-} ]]; then
    broker_given=true
fi

redis_pid=""
celery_pid=""

stop_redis() {
    if [[ -n $redis_pid ]]; then
        kill -TERM "$redis_pid" 2>/dev/null
        wait "$redis_pid" 2>/dev/null
        redis_pid=""
    fi
}

# Something listens on the port (a Redis with a password answers too, just not PONG).
port_answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if ! $broker_given && ! port_answers 6379; then
    section "redis: starting a local redis-server on 127.0.0.1:6379 (data in .run/redis)"
    mkdir -p .run/redis || exit 1
    redis-server --port 6379 --bind 127.0.0.1 --appendonly yes --dir .run/redis --daemonize no \
        --logfile redis.log </dev/null >>.run/redis/redis.log 2>&1 &
    redis_pid=$!
    trap stop_redis EXIT
    for ((i = 0; i < 100; i++)); do
        [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]] && break
        if ! kill -0 "$redis_pid" 2>/dev/null || ((i == 99)); then
            log "error: the local redis-server did not start; its log (.run/redis/redis.log):"
            cat .run/redis/redis.log >&2
            exit 1
        fi
        sleep 0.1
    done
fi

section "run: swift-celery $*"
# swift-celery runs as a child so that the local Redis can be stopped after it; signals sent to this script
# are passed on to it, and its exit status is this script's.
forward() {
    [[ -n $celery_pid ]] && kill "-$1" "$celery_pid" 2>/dev/null
}
trap 'forward INT' INT
trap 'forward TERM' TERM
.build/release/swift-celery "$@" &
celery_pid=$!
# wait returns early when a trapped signal arrives; keep waiting while the child lives, then collect its status.
while kill -0 "$celery_pid" 2>/dev/null; do
    wait "$celery_pid"
done
wait "$celery_pid"
exit $?
