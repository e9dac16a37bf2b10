#!/usr/bin/env bash
# Stop what infra/up.sh started, and nothing else.
#
# Usage: infra/down.sh [--purge] [--only pg|redis|kafka]
#
# Only the parts listed in .infra/started are stopped, and each only after checking that the
# running process really is ours (pid file + data dir / config path), so a Postgres, Redis or
# Kafka that up.sh reused, or one that took over the port since, is left alone. Idempotent.
# --purge also stops anything still running from .infra and deletes the data, config and logs
# (not the jar cache .infra/kafka/libs, nor .infra/bin).
set -euo pipefail

# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PURGE=0
ONLY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --purge) PURGE=1 ;;
    --only)
        [[ $# -ge 2 ]] || die "--only needs pg, redis or kafka"
        ONLY="$2"
        shift
        ;;
    -h | --help)
        sed -n '2,11p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $1 (use --purge, --only PART)" ;;
    esac
    shift
done
case "$ONLY" in "" | pg | redis | kafka) ;; *) die "--only needs pg, redis or kafka, not '$ONLY'" ;; esac

# True when pid $1 exists and is not a zombie (our PID 1 may not reap orphans).
alive() {
    [[ -n "${1:-}" && -r "/proc/$1/stat" ]] || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != "Z" ]]
}
cmdline_has() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }

wait_gone() { # wait_gone PID SECONDS
    local deadline=$((SECONDS + $2))
    while alive "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# SIGTERM, bounded wait, then SIGKILL.
terminate() { # terminate PID NAME
    kill -TERM "$1" 2>/dev/null || true
    if ! wait_gone "$1" "$WAIT_SECS"; then
        log "$2: still running after ${WAIT_SECS}s, sending SIGKILL"
        kill -KILL "$1" 2>/dev/null || true
        wait_gone "$1" 10 || die "$2 (pid $1) survived SIGKILL"
    fi
}

unmark() {
    [[ -f "$STARTED" ]] || return 0
    local rest
    rest="$(grep -vxF -- "$1" "$STARTED" || true)"
    if [[ -n "$rest" ]]; then printf '%s\n' "$rest" >"$STARTED"; else rm -f "$STARTED"; fi
}

stop_kafka() {
    local pid
    pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
    if alive "$pid" && cmdline_has "$pid" "$KAFKA_CONF"; then
        log "kafka: stopping pid $pid (controlled shutdown)"
        terminate "$pid" kafka
    else
        log "kafka: not running"
    fi
    rm -f "$KAFKA_PID"
}

stop_pg() {
    [[ -f "$PG_DATA/PG_VERSION" ]] || {
        log "postgres: no cluster in $PG_DATA"
        return 0
    }
    local bin as_pg=()
    # The cluster's own major version, not whatever is newest now.
    bin="/usr/lib/postgresql/$(cat "$PG_DATA/PG_VERSION")/bin"
    [[ -x "$bin/pg_ctl" ]] || die "postgres: $bin/pg_ctl missing"
    if [[ $EUID -eq 0 ]]; then as_pg=(runuser -u postgres --); fi
    if "${as_pg[@]}" "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        log "postgres: stopping (fast)"
        "${as_pg[@]}" "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t "$WAIT_SECS" stop >/dev/null ||
            {
                log "postgres: fast stop timed out, stopping immediately"
                "${as_pg[@]}" "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w -t "$WAIT_SECS" stop >/dev/null
            }
    else
        log "postgres: not running"
    fi
}

stop_redis() {
    local pid port
    pid="$(cat "$REDIS_DIR/redis.pid" 2>/dev/null || true)"
    port="$(cat "$REDIS_DIR/port" 2>/dev/null || echo 6379)"
    if alive "$pid" && cmdline_has "$pid" redis-server; then
        log "redis: stopping pid $pid"
        # SHUTDOWN NOSAVE only if the server on that port is this pid; else plain SIGTERM.
        if [[ "$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
            sed -n 's/^process_id:\([0-9]*\).*/\1/p')" == "$pid" ]]; then
            redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
        fi
        terminate "$pid" redis
    else
        log "redis: not running"
    fi
    rm -f "$REDIS_DIR/redis.pid"
}

for part in kafka redis pg; do
    [[ -z "$ONLY" || "$ONLY" == "$part" ]] || continue
    if grep -qxF -- "$part" "$STARTED" 2>/dev/null || [[ $PURGE -eq 1 ]]; then
        "stop_$part"
        unmark "$part"
    else
        log "$part: not started by infra/up.sh, leaving it alone"
    fi
done

if [[ $PURGE -eq 1 && -z "$ONLY" ]]; then
    log "purging $STATE data (keeping the jar cache $KAFKA_DIR/libs and $STATE/bin)"
    rm -rf -- "$STATE/pg" "$STATE/redis" "$KAFKA_DIR/data" "$KAFKA_DIR/config" "$KAFKA_PID" \
        "$STATE/logs" "$STATE/env" "$STARTED"
fi
