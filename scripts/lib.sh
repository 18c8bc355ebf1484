# Helpers shared by scripts/test.sh, scripts/run.sh, scripts/symbol-order.sh and Benchmarks/suite.sh.
# Source it; it defines functions only.
#
#   ensure_swift            put /opt/swift/usr/bin on PATH when swift is not there already, or fail
#   ensure_system_packages  apt-get install what the build and tests need, only when something is missing
#   ensure_python_venv      make sure python3 can create a virtualenv (apt-get install python3-venv if not)
#   section TITLE           print a section header
#   start_scratch_redis DIR a throw-away redis-server (no persistence) on a free loopback port, data in DIR; sets
#                           scratch_redis_port and scratch_redis_pid and returns once it answers PING

section() {
    printf '\n==== %s ====\n' "$*"
}

log() {
    printf '%s\n' "$*" >&2
}

# Installs Debian packages with apt-get, once per script run, as root or through sudo.
apt_install() {
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            log "error: missing packages ($*) and not root; install them with: apt-get install -y $*"
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "error: missing packages ($*) and no apt-get on this machine; install them by hand"
        return 1
    fi
    log "installing: $*"
    if [[ -z ${_SWIFT_CELERY_APT_UPDATED:-} ]]; then
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
        _SWIFT_CELERY_APT_UPDATED=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null
}

ensure_system_packages() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    # Validates compose/docker-compose.yml in the tests (`docker-compose config` needs no engine).
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    # Counts instructions and allocations for the regression benchmark (Benchmarks/hotpath.sh).
    command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
    if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists jansson; then
        missing+=(libjansson-dev)
    fi
    # kombu's message compression (Sources/CCompression).
    [[ -f /usr/include/zlib.h ]] || missing+=(zlib1g-dev)
    [[ -f /usr/include/bzlib.h ]] || missing+=(libbz2-dev)
    [[ -f /usr/include/lzma.h ]] || missing+=(liblzma-dev)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    apt_install "${missing[@]}"
}

ensure_python_venv() {
    local missing=()
    if ! command -v python3 >/dev/null 2>&1; then
        missing+=(python3 python3-venv)
    elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    apt_install "${missing[@]}"
}

ensure_swift() {
    if ! command -v swift >/dev/null 2>&1 && [[ -x /opt/swift/usr/bin/swift ]]; then
        export PATH="/opt/swift/usr/bin:$PATH"
    fi
    if ! command -v swift >/dev/null 2>&1; then
        log "error: no Swift toolchain found (looked on PATH and in /opt/swift/usr/bin); Swift 6 is required"
        return 1
    fi
}

start_scratch_redis() {
    local dir=$1
    scratch_redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    redis-server --port "$scratch_redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
        >"$dir/redis.log" 2>&1 &
    scratch_redis_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$scratch_redis_port" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    log "redis-server did not answer on port $scratch_redis_port: $(tail -5 "$dir/redis.log")"
    return 1
}
