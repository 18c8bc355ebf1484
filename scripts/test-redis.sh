#!/usr/bin/env bash
# Throw-away Redis servers for the integration tests.
#
#   scripts/test-redis.sh COMMAND [ARGS...]   start the servers, run COMMAND with the variables below exported,
#                                            stop the servers, exit with COMMAND's exit code
#   source scripts/test-redis.sh             start the servers and export the variables in the current shell;
#                                            they stop when that shell exits (or call test_redis_stop)
#
# Three redis-server processes on free loopback ports, all data in one temporary directory:
#   plain    SWIFT_CELERY_TEST_REDIS_URL=redis://127.0.0.1:PORT/0 (also a Unix socket:
#            SWIFT_CELERY_TEST_REDIS_UNIX_URL=unix://DIR/plain/redis.sock?db=0)
#   auth     SWIFT_CELERY_TEST_REDIS_AUTH_URL=redis://:PASSWORD@127.0.0.1:PORT/0 (requirepass, random password),
#            SWIFT_CELERY_TEST_REDIS_AUTH_PASSWORD, SWIFT_CELERY_TEST_REDIS_AUTH_PORT
#   tls      SWIFT_CELERY_TEST_REDIS_TLS_URL=rediss://localhost:PORT/0?ssl_ca_certs=DIR/tls/ca.pem
#            (TLS only, certificate for DNS:localhost, IP:127.0.0.1 and IP:::1, client certificates optional;
#            it listens on ::1 too when this machine has IPv6 loopback: SWIFT_CELERY_TEST_REDIS_TLS_IPV6=1),
#            SWIFT_CELERY_TEST_REDIS_TLS_PORT
#   tls with a certificate for other names (DNS:redis.invalid, IP:192.0.2.1; same CA), which a client must
#            refuse by any of this machine's names: SWIFT_CELERY_TEST_REDIS_TLS_WRONG_NAME_PORT
#   sentinel a master, a replica and three sentinels (scripts/test-sentinel.sh, variables as there, each prefixed
#            SWIFT_CELERY_TEST_: SWIFT_CELERY_TEST_SENTINEL_URL, ..._MASTER_NAME, ..._PASSWORD, ...), and
#            SWIFT_CELERY_TEST_SENTINEL_DIR; SWIFT_CELERY_TEST_SENTINEL=0 leaves them out
#   tls sentinel: one sentinel, TLS only, monitoring the tls server as "tlsprimary" (announced as 127.0.0.1, so
#            a client reaches the master by IP): SWIFT_CELERY_TEST_SENTINEL_TLS_URL
#            (sentinel://127.0.0.1:PORT/0?master_name=tlsprimary&ssl_ca_certs=DIR/tls/ca.pem)
# and SWIFT_CELERY_TEST_TLS_DIR (ca.pem, client.pem, client.key, and other-ca.pem: an unrelated CA that must be
# refused), SWIFT_CELERY_TEST_REDIS_PORT, SWIFT_CELERY_TEST_REDIS_SERVER (the redis-server binary, for tests that
# start and kill their own instance).

# shellcheck source=scripts/test-sentinel.sh
source "$(dirname "${BASH_SOURCE[0]}")/test-sentinel.sh"

_test_redis_log() {
    printf 'test-redis: %s\n' "$*" >&2
}

# Prints a TCP port that nothing listens on at the moment (the kernel's choice for a bind to port 0).
_test_redis_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_test_redis_make_certificates() {
    local dir=$1 name
    mkdir -p "$dir" || return 1
    (
        set -e
        cd "$dir"
        cat >ca.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = swift-celery test CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
        printf '%s\n' 'basicConstraints = CA:FALSE' 'keyUsage = critical, digitalSignature, keyEncipherment' \
            'extendedKeyUsage = serverAuth' 'subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1' >server.ext
        # Signed by the same CA but for names this machine does not have (192.0.2.0/24 is TEST-NET-1).
        printf '%s\n' 'basicConstraints = CA:FALSE' 'keyUsage = critical, digitalSignature, keyEncipherment' \
            'extendedKeyUsage = serverAuth' 'subjectAltName = DNS:redis.invalid, IP:192.0.2.1' >wrong-name.ext
        printf '%s\n' 'basicConstraints = CA:FALSE' 'keyUsage = critical, digitalSignature, keyEncipherment' \
            'extendedKeyUsage = clientAuth' >client.ext
        for name in ca other-ca; do
            openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 2 \
                -config ca.cnf -subj "/CN=swift-celery test $name" -keyout "$name.key" -out "$name.pem" 2>/dev/null
        done
        for name in server client wrong-name; do
            openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
                -subj "/CN=${name/server/localhost}" -keyout "$name.key" -out "$name.csr" 2>/dev/null
            openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                -extfile "$name.ext" -out "$name.pem" 2>/dev/null
        done
        openssl verify -CAfile ca.pem server.pem client.pem wrong-name.pem >/dev/null
        rm -f ./*.csr ./*.ext ca.cnf ca.srl
    ) || {
        _test_redis_log "could not make the test certificates with openssl in $dir"
        return 1
    }
}

# _test_redis_start_one NAME PING_COMMAND... -- REDIS_SERVER_ARGS...
# Starts one server with its data and log in $_TEST_REDIS_DIR/NAME and waits until PING_COMMAND succeeds.
_test_redis_start_one() {
    local name=$1 dir="$_TEST_REDIS_DIR/$1" ping=() pid i bind=${_TEST_REDIS_BIND:-127.0.0.1}
    shift
    while [[ $1 != -- ]]; do
        ping+=("$1")
        shift
    done
    shift
    mkdir -p "$dir" || return 1
    "$SWIFT_CELERY_TEST_REDIS_SERVER" --bind $bind --dir "$dir" --logfile "$dir/redis.log" --daemonize no \
        --save '' --appendonly no "$@" </dev/null >>"$dir/redis.log" 2>&1 &
    pid=$!
    _TEST_REDIS_PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
        if [[ $("${ping[@]}" ping 2>/dev/null) == PONG ]]; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    _test_redis_log "the $name redis-server did not answer PING; its log ($dir/redis.log):"
    cat "$dir/redis.log" >&2 2>/dev/null || _test_redis_log "(no log)"
    return 1
}

# _test_redis_start_tls_sentinel TLS_DIR TLS_PORT: a TLS-only sentinel for the TLS server; sets
# SWIFT_CELERY_TEST_SENTINEL_TLS_URL once it names the master.
_test_redis_start_tls_sentinel() {
    local tls_dir=$1 tls_port=$2 dir="$_TEST_REDIS_DIR/tls-sentinel" port attempt i ca
    ca="$tls_dir/ca.pem"
    mkdir -p "$dir" || return 1
    for attempt in 1 2 3; do
        port=$(_test_redis_free_port) || return 1
        printf '%s\n' "port 0" "tls-port $port" "bind 127.0.0.1" "dir $dir" "logfile $dir/redis.log" \
            "tls-cert-file $tls_dir/server.pem" "tls-key-file $tls_dir/server.key" "tls-ca-cert-file $ca" \
            "tls-auth-clients optional" "tls-replication yes" "sentinel monitor tlsprimary 127.0.0.1 $tls_port 1" \
            >"$dir/sentinel.conf"
        "$SWIFT_CELERY_TEST_REDIS_SERVER" "$dir/sentinel.conf" --sentinel </dev/null >>"$dir/stdout.log" 2>&1 &
        _TEST_REDIS_PIDS+=("$!")
        for ((i = 0; i < 100; i++)); do
            if redis-cli --tls --cacert "$ca" -h 127.0.0.1 -p "$port" sentinel get-master-addr-by-name tlsprimary \
                2>/dev/null | grep -qx "$tls_port"; then
                export SWIFT_CELERY_TEST_SENTINEL_TLS_URL="sentinel://127.0.0.1:$port/0?master_name=tlsprimary&ssl_ca_certs=$ca"
                return 0
            fi
            sleep 0.1
        done
    done
    _test_redis_log "the TLS sentinel did not answer; its log ($dir/redis.log):"
    cat "$dir/redis.log" >&2 2>/dev/null
    return 1
}

test_redis_stop() {
    local pid
    for pid in "${_TEST_REDIS_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${_TEST_REDIS_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    _TEST_REDIS_PIDS=()
    if [[ -n ${_TEST_REDIS_DIR:-} && -d $_TEST_REDIS_DIR/sentinel ]]; then
        test_sentinel_stop "$_TEST_REDIS_DIR/sentinel"
    fi
    if [[ -n ${_TEST_REDIS_DIR:-} && -d $_TEST_REDIS_DIR ]]; then
        rm -rf "$_TEST_REDIS_DIR"
    fi
    _TEST_REDIS_DIR=""
}

test_redis_start() {
    local redis_server port auth_port tls_port wrong_name_port password tls_dir tls_bind=127.0.0.1 ipv6=0
    _TEST_REDIS_PIDS=()
    redis_server=$(command -v redis-server) || {
        _test_redis_log "redis-server not found; install the redis-server package"
        return 1
    }
    command -v redis-cli >/dev/null || {
        _test_redis_log "redis-cli not found; install the redis-tools package"
        return 1
    }
    export SWIFT_CELERY_TEST_REDIS_SERVER=$redis_server
    _TEST_REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/swift-celery-redis.XXXXXX") || return 1
    tls_dir="$_TEST_REDIS_DIR/tls"
    _test_redis_make_certificates "$tls_dir" || return 1
    password=$(openssl rand -hex 16) || return 1

    # A port can be taken between choosing and binding it; a server that failed to start gets another one.
    local attempt
    for attempt in 1 2 3; do
        port=$(_test_redis_free_port) || return 1
        _test_redis_start_one plain redis-cli -h 127.0.0.1 -p "$port" -- \
            --port "$port" --unixsocket "$_TEST_REDIS_DIR/plain/redis.sock" --unixsocketperm 700 && break
        ((attempt < 3)) || return 1
    done
    for attempt in 1 2 3; do
        auth_port=$(_test_redis_free_port) || return 1
        REDISCLI_AUTH=$password _test_redis_start_one auth redis-cli -h 127.0.0.1 -p "$auth_port" -- \
            --port "$auth_port" --requirepass "$password" && break
        ((attempt < 3)) || return 1
    done
    # The TLS server listens on IPv6 loopback too where there is one, for the tests that connect to [::1].
    if python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
        tls_bind="127.0.0.1 ::1"
        ipv6=1
    fi
    for attempt in 1 2 3; do
        tls_port=$(_test_redis_free_port) || return 1
        _TEST_REDIS_BIND=$tls_bind _test_redis_start_one tls-server \
            redis-cli --tls --cacert "$tls_dir/ca.pem" -h localhost -p "$tls_port" -- \
            --port 0 --tls-port "$tls_port" --tls-cert-file "$tls_dir/server.pem" \
            --tls-key-file "$tls_dir/server.key" --tls-ca-cert-file "$tls_dir/ca.pem" \
            --tls-auth-clients optional && break
        ((attempt < 3)) || return 1
    done
    for attempt in 1 2 3; do
        wrong_name_port=$(_test_redis_free_port) || return 1
        _test_redis_start_one tls-wrong-name redis-cli --tls --cacert "$tls_dir/ca.pem" \
            -h 127.0.0.1 -p "$wrong_name_port" -- \
            --port 0 --tls-port "$wrong_name_port" --tls-cert-file "$tls_dir/wrong-name.pem" \
            --tls-key-file "$tls_dir/wrong-name.key" --tls-ca-cert-file "$tls_dir/ca.pem" \
            --tls-auth-clients optional && break
        ((attempt < 3)) || return 1
    done

    export SWIFT_CELERY_TEST_REDIS_PORT=$port
    export SWIFT_CELERY_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
    export SWIFT_CELERY_TEST_REDIS_UNIX_URL="unix://$_TEST_REDIS_DIR/plain/redis.sock?db=0"
    export SWIFT_CELERY_TEST_REDIS_AUTH_PORT=$auth_port
    export SWIFT_CELERY_TEST_REDIS_AUTH_PASSWORD=$password
    export SWIFT_CELERY_TEST_REDIS_AUTH_URL="redis://:$password@127.0.0.1:$auth_port/0"
    export SWIFT_CELERY_TEST_REDIS_TLS_PORT=$tls_port
    export SWIFT_CELERY_TEST_REDIS_TLS_URL="rediss://localhost:$tls_port/0?ssl_ca_certs=$tls_dir/ca.pem"
    if [[ ${SWIFT_CELERY_TEST_SENTINEL:-1} != 0 ]]; then
        _test_redis_start_tls_sentinel "$tls_dir" "$tls_port" || return 1
        local line
        while IFS= read -r line; do
            export "SWIFT_CELERY_TEST_$line"
        done < <(test_sentinel_start "$_TEST_REDIS_DIR/sentinel")
        [[ -n ${SWIFT_CELERY_TEST_SENTINEL_URL:-} ]] || return 1
        export SWIFT_CELERY_TEST_SENTINEL_DIR=$_TEST_REDIS_DIR/sentinel
    fi

    export SWIFT_CELERY_TEST_REDIS_TLS_IPV6=$ipv6
    export SWIFT_CELERY_TEST_REDIS_TLS_WRONG_NAME_PORT=$wrong_name_port
    export SWIFT_CELERY_TEST_TLS_DIR=$tls_dir
    _test_redis_log "redis-server plain on 127.0.0.1:$port, auth on 127.0.0.1:$auth_port, TLS on localhost:$tls_port," \
        "TLS with a certificate for other names on 127.0.0.1:$wrong_name_port${SWIFT_CELERY_TEST_SENTINEL_PORTS:+,}" \
        "${SWIFT_CELERY_TEST_SENTINEL_PORTS:+sentinels on $SWIFT_CELERY_TEST_SENTINEL_PORTS}"
}

if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
    # Sourced: leave the caller's shell options alone; stop the servers when that shell exits.
    if test_redis_start; then
        trap test_redis_stop EXIT
    else
        test_redis_stop
        return 1
    fi
else
    set -uo pipefail
    if (($# == 0)); then
        sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
    fi
    _TEST_REDIS_PIDS=()
    trap test_redis_stop EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    test_redis_start || exit 1
    "$@"
    exit $?
fi
