#!/usr/bin/env bash
# A throw-away Redis Sentinel deployment on loopback for the tests: a master, one replica and three sentinels
# (quorum 2), each a redis-server process with its data, configuration and log in one directory.
#
#   scripts/test-sentinel.sh start DIR   start one in DIR (created), print its variables as NAME=VALUE lines once
#                                        every sentinel knows the master, the replica and the other sentinels
#   scripts/test-sentinel.sh stop DIR    kill every process of the one in DIR and remove DIR
#   source scripts/test-sentinel.sh      define test_sentinel_start DIR / test_sentinel_stop DIR (test-redis.sh
#                                        sources it and starts one for the whole run)
#
# The variables (also written to DIR/sentinel.env):
#   SENTINEL_URL         sentinel://:MASTERPW@127.0.0.1:S1/0;sentinel://127.0.0.1:S2/0;sentinel://127.0.0.1:S3/0
#                        (kombu's form; the master name and the sentinels' password are not in it)
#   SENTINEL_MASTER_NAME, SENTINEL_PASSWORD (the sentinels' requirepass), SENTINEL_MASTER_PASSWORD,
#   SENTINEL_PORTS (S1 S2 S3), SENTINEL_REDIS_PORTS (the first master's port, then the replica's)
# Each server's pid is in DIR/<name>/pid; DIR/<name>/redis.conf restarts a killed one as it was.
#
# Failover is quick and still robust on a loaded machine: a master is down after 1500 ms without an answer, and
# a failover that stalls is retried after 5 s.

TEST_SENTINEL_MASTER_NAME=${TEST_SENTINEL_MASTER_NAME:-swiftceleryprimary}

_test_sentinel_log() {
    printf 'test-sentinel: %s\n' "$*" >&2
}

_test_sentinel_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# _test_sentinel_run DIR NAME [--sentinel]: starts redis-server on DIR/NAME/redis.conf, records its pid.
_test_sentinel_run() {
    local dir=$1 name=$2
    shift 2
    redis-server "$dir/$name/redis.conf" "$@" </dev/null >>"$dir/$name/stdout.log" 2>&1 &
    echo $! >"$dir/$name/pid"
}

# _test_sentinel_wait SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds or SECONDS pass.
_test_sentinel_wait() {
    local seconds=$1 i
    shift
    for ((i = 0; i < seconds * 10; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

_test_sentinel_ready() {
    local dir=$1 port output SENTINEL_URL SENTINEL_MASTER_NAME SENTINEL_PASSWORD SENTINEL_MASTER_PASSWORD \
        SENTINEL_PORTS SENTINEL_REDIS_PORTS
    # shellcheck disable=SC1091
    source "$dir/sentinel.env"
    for port in $SENTINEL_PORTS; do
        output=$(REDISCLI_AUTH=$SENTINEL_PASSWORD redis-cli -p "$port" sentinel master "$SENTINEL_MASTER_NAME") ||
            return 1
        # Each sentinel must see the replica and both other sentinels, or a failover cannot be agreed on.
        grep -A1 -x 'num-slaves' <<<"$output" | tail -1 | grep -qx 1 || return 1
        grep -A1 -x 'num-other-sentinels' <<<"$output" | tail -1 | grep -qx 2 || return 1
    done
    REDISCLI_AUTH=$SENTINEL_MASTER_PASSWORD redis-cli -p "${SENTINEL_REDIS_PORTS#* }" info replication |
        grep -q 'master_link_status:up'
}

test_sentinel_start() {
    local dir=$1 master_port replica_port ports=() port name i password master_password
    mkdir -p "$dir" || return 1
    password=$(openssl rand -hex 12) || return 1
    master_password=$(openssl rand -hex 12) || return 1
    master_port=$(_test_sentinel_free_port) || return 1
    replica_port=$(_test_sentinel_free_port) || return 1
    for name in master replica; do
        mkdir -p "$dir/$name"
        port=$master_port
        [[ $name == replica ]] && port=$replica_port
        # Both may become master, so both authenticate to the other.
        cat >"$dir/$name/redis.conf" <<EOF
port $port
bind 127.0.0.1
dir $dir/$name
logfile $dir/$name/redis.log
save ""
appendonly no
requirepass $master_password
masterauth $master_password
EOF
        if [[ $name == replica ]]; then
            echo "replicaof 127.0.0.1 $master_port" >>"$dir/$name/redis.conf"
        fi
        _test_sentinel_run "$dir" "$name"
    done
    for i in 1 2 3; do
        ports+=("$(_test_sentinel_free_port)")
        mkdir -p "$dir/sentinel$i"
        cat >"$dir/sentinel$i/redis.conf" <<EOF
port ${ports[-1]}
bind 127.0.0.1
dir $dir/sentinel$i
logfile $dir/sentinel$i/redis.log
requirepass $password
sentinel sentinel-pass $password
sentinel monitor $TEST_SENTINEL_MASTER_NAME 127.0.0.1 $master_port 2
sentinel auth-pass $TEST_SENTINEL_MASTER_NAME $master_password
sentinel down-after-milliseconds $TEST_SENTINEL_MASTER_NAME 1500
sentinel failover-timeout $TEST_SENTINEL_MASTER_NAME 5000
sentinel parallel-syncs $TEST_SENTINEL_MASTER_NAME 1
EOF
        _test_sentinel_run "$dir" "sentinel$i" --sentinel
    done
    cat >"$dir/sentinel.env" <<EOF
SENTINEL_URL='sentinel://:$master_password@127.0.0.1:${ports[0]}/0;sentinel://127.0.0.1:${ports[1]}/0;sentinel://127.0.0.1:${ports[2]}/0'
SENTINEL_MASTER_NAME=$TEST_SENTINEL_MASTER_NAME
SENTINEL_PASSWORD=$password
SENTINEL_MASTER_PASSWORD=$master_password
SENTINEL_PORTS='${ports[*]}'
SENTINEL_REDIS_PORTS='$master_port $replica_port'
EOF
    # Sentinels find each other through hello messages every 2 s: allow for a loaded machine.
    if ! _test_sentinel_wait 30 _test_sentinel_ready "$dir"; then
        _test_sentinel_log "the sentinels in $dir did not come up; their logs:"
        tail -n 20 "$dir"/*/redis.log >&2
        test_sentinel_stop "$dir"
        return 1
    fi
    sed "s/'//g" "$dir/sentinel.env"
}

test_sentinel_stop() {
    local dir=$1 pidfile pid
    [[ -d $dir ]] || return 0
    for pidfile in "$dir"/*/pid; do
        [[ -f $pidfile ]] || continue
        pid=$(<"$pidfile")
        kill -KILL "$pid" 2>/dev/null
    done
    for pidfile in "$dir"/*/pid; do
        [[ -f $pidfile ]] || continue
        pid=$(<"$pidfile")
        # A child of this shell is reaped by wait; another's is gone once it is no longer alive or a zombie.
        wait "$pid" 2>/dev/null
        while kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; do
            sleep 0.05
        done
    done
    rm -rf "$dir"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -uo pipefail
    case ${1:-} in
    start)
        [[ -n ${2:-} ]] || exit 2
        test_sentinel_start "$2" || exit 1
        ;;
    stop)
        [[ -n ${2:-} ]] || exit 2
        test_sentinel_stop "$2"
        ;;
    *)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
    esac
fi
