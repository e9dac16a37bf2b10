#!/usr/bin/env bash
# Bring up REAL Postgres, Redis and a single-node Apache Kafka (KRaft) for `make test`.
#
# Usage:  eval "$(infra/up.sh | grep ^export)"
#
# stdout: only the three `export NAME=value` lines (also written to .infra/env).
# stderr: progress, versions, and log tails on failure.
# Exit:   0 when all three answer; non-zero otherwise.
#
# Each part is, in order of preference:
#   1. given   - its URL env var is set (DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS): untouched;
#   2. reused  - something already listening on its port answers (pg_isready / PING / metadata);
#   3. started - by this script, with all state under $REPO/.infra, recorded in .infra/started
#                so that infra/down.sh stops only what was started here.
#
# Knobs (env): PGPORT_LEARNFLOW (default 5432), INFRA_WAIT_SECS (default 60, every wait),
#              LEARNFLOW_PYTHON (python with confluent_kafka, default $REPO/.venv/bin/python).
set -Eeuo pipefail
# Never exit silently: name the command that failed.
trap 'printf "[infra] ERROR: line %s: %s failed (exit %s)\n" "$LINENO" "$BASH_COMMAND" "$?" >&2' ERR

# shellcheck source=infra/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KAFKA_POM="$REPO/infra/kafka/pom.xml"
KAFKA_LOG4J="$REPO/infra/kafka/log4j2.properties"
PY="${LEARNFLOW_PYTHON:-$REPO/.venv/bin/python}"

show_tail() { # show_tail FILE...: the evidence a failed wait needs
    local f
    for f in "$@"; do
        [[ -f "$f" ]] || continue
        printf -- '----- last 40 lines of %s -----\n' "$f" >&2
        tail -n 40 -- "$f" >&2 || true
    done
}

# True when a TCP connect to 127.0.0.1:$1 succeeds (bash /dev/tcp, no extra tools).
# shellcheck disable=SC2016 # $1 is expanded by the inner bash
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# True when pid $1 exists and is not a zombie (our PID 1 may not reap orphans).
alive() {
    [[ -n "${1:-}" && -r "/proc/$1/stat" ]] || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != "Z" ]]
}

mark_started() { grep -qxF -- "$1" "$STARTED" 2>/dev/null || printf '%s\n' "$1" >>"$STARTED"; }
unmark_started() {
    [[ -f "$STARTED" ]] || return 0
    local rest
    rest="$(grep -vxF -- "$1" "$STARTED" || true)"
    if [[ -n "$rest" ]]; then printf '%s\n' "$rest" >"$STARTED"; else rm -f "$STARTED"; fi
}

# ---------------------------------------------------------------- packages
APT_UPDATED=0
apt_install() { # apt_install PKG...: only called when a binary is missing
    [[ $EUID -eq 0 ]] || die "missing packages ($*) and not root: install them with: sudo apt-get install -y $*"
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 ||
        die "apt-get install $* failed"
}

pg_bindir() { # newest /usr/lib/postgresql/<ver>/bin that has pg_ctl
    local d
    d="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pg_ctl' -printf '%h\n' 2>/dev/null |
        sort -V | tail -n 1)"
    [[ -n "$d" ]] && printf '%s\n' "$d"
}

ensure_packages() {
    local missing=()
    if [[ -z "${DATABASE_URL:-}" ]] && ! pg_bindir >/dev/null; then missing+=(postgresql); fi
    if [[ -z "${REDIS_URL:-}" ]] && ! command -v redis-server >/dev/null; then missing+=(redis-server); fi
    if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
        command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
        command -v mvn >/dev/null || missing+=(maven)
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}"; fi
}

# ---------------------------------------------------------------- Postgres
PG_BIN=""
AS_PG=() # run Postgres tools as the `postgres` user when we are root (initdb refuses root)
PG_SOCK="$PG_DIR/run"

pg_ours_running() { [[ -f "$PG_DATA/PG_VERSION" ]] && "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }
pg_admin() { "${AS_PG[@]}" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -d postgres "$@"; }

pg_init() {
    log "postgres: initdb $PG_DATA"
    mkdir -p "$PG_DATA" "$PG_SOCK"
    chmod 700 "$PG_DATA" "$PG_SOCK"
    if [[ $EUID -eq 0 ]]; then chown -R postgres:postgres "$PG_DIR"; fi
    # peer on the private socket for our admin steps; passwords (scram) over TCP for everyone else.
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >"$LOGS/initdb.log" 2>&1 ||
        {
            show_tail "$LOGS/initdb.log"
            die "initdb failed"
        }
    # Port and socket are rewritten on every start (learnflow.conf) so PGPORT_LEARNFLOW can change.
    printf "\ninclude_if_exists = 'learnflow.conf'\n" >>"$PG_DATA/postgresql.conf"
}

# Writes learnflow.conf; succeeds when its content changed (a running server needs a
# restart to take it: shared_buffers is read at start only).
pg_write_conf() {
    local conf="$PG_DATA/learnflow.conf" new
    # fsync and synchronous_commit stay on: tests run against a real server. Memory and
    # WAL are sized for mastery ingestion's write rate (10,000 events/s), as a server
    # of its own would be: initdb's 128 MB of shared buffers made backends write out
    # dirty pages themselves, and its 4 MB of WAL buffers filled on every batch.
    new="$(
        cat <<EOF
# written by infra/up.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
shared_buffers = 1GB
wal_buffers = 64MB
max_wal_size = 4GB
checkpoint_timeout = 15min
EOF
    )"
    if [[ -f "$conf" && "$(cat "$conf")" == "$new" ]]; then return 1; fi
    printf '%s\n' "$new" >"$conf"
    if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$conf"; fi
}

pg_start() {
    [[ -f "$PG_DATA/PG_VERSION" ]] || pg_init
    mkdir -p "$PG_SOCK"
    chmod 700 "$PG_SOCK"
    pg_write_conf || true
    touch "$PG_LOG"
    if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$PG_DATA/learnflow.conf" "$PG_SOCK" "$PG_LOG"; fi
    log "postgres: starting on 127.0.0.1:$PG_PORT (log $PG_LOG)"
    mark_started pg # before the wait: a half-started server must still be stopped by down.sh
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$WAIT_SECS" start >/dev/null ||
        {
            show_tail "$PG_LOG"
            die "postgres did not start within ${WAIT_SECS}s"
        }
    pg_wait_ready
}

pg_wait_ready() {
    local deadline=$((SECONDS + WAIT_SECS))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; do
        if ((SECONDS >= deadline)); then
            show_tail "$PG_LOG"
            die "postgres on 127.0.0.1:$PG_PORT not ready within ${WAIT_SECS}s"
        fi
        sleep 0.2
    done
}

pg_ensure_role_db() {
    # Idempotent: CREATE ROLE has no IF NOT EXISTS; CREATE DATABASE cannot run in a DO block.
    pg_admin <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'learnflow') THEN
    CREATE ROLE learnflow LOGIN PASSWORD 'learnflow';
  END IF;
END $$;
-- Not a superuser: row-level security keeps tenants apart, and superusers bypass it
-- (the services refuse to run as one). CREATEDB: the benchmarks make their own.
ALTER ROLE learnflow NOSUPERUSER NOBYPASSRLS CREATEDB;
SQL
    if [[ -z "$(pg_admin -Atc "SELECT 1 FROM pg_database WHERE datname = 'learnflow'")" ]]; then
        pg_admin -c 'CREATE DATABASE learnflow OWNER learnflow'
    fi
}

ensure_postgres() {
    if [[ -n "${DATABASE_URL:-}" ]]; then
        DB_URL="$DATABASE_URL"
        log "postgres: DATABASE_URL given, not managed here"
        PG_VERSION_STR="$( (PGCONNECT_TIMEOUT=3 psql -X -Atc 'SHOW server_version' "$DB_URL" 2>/dev/null || echo '?') | head -n 1)"
        return
    fi
    PG_BIN="$(pg_bindir)" || die "no /usr/lib/postgresql/<ver>/bin/pg_ctl after install"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "the postgres system user is missing (package install broken?)"
        AS_PG=(runuser -u postgres --)
        # initdb runs as postgres, so every directory above .infra must be traversable by it.
        "${AS_PG[@]}" test -x "$REPO" ||
            die "user postgres cannot enter $REPO; make its parents o+x or set DATABASE_URL"
    fi
    # The Unix socket path has a 107-byte limit; fall back to /tmp for very deep checkouts.
    if ((${#PG_SOCK} > 90)); then PG_SOCK=/tmp; fi
    DB_URL="postgresql://learnflow:learnflow@127.0.0.1:$PG_PORT/learnflow"

    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; then
        if pg_ours_running; then
            if pg_write_conf; then
                log "postgres: settings changed, restarting $PG_DATA"
                "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t "$WAIT_SECS" restart >/dev/null
                pg_wait_ready
            else
                log "postgres: already running from $PG_DATA, reusing"
            fi
            pg_ensure_role_db
        else
            log "postgres: a server already answers on 127.0.0.1:$PG_PORT, reusing it"
            unmark_started pg
        fi
    elif pg_ours_running && [[ "$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null)" != "$PG_PORT" ]]; then
        # Ours, but on another port (PGPORT_LEARNFLOW changed): move it.
        log "postgres: ours runs on another port, restarting it on $PG_PORT"
        "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$WAIT_SECS" stop >/dev/null
        port_open "$PG_PORT" && die "127.0.0.1:$PG_PORT is taken; free it, set PGPORT_LEARNFLOW or DATABASE_URL"
        pg_start
        pg_ensure_role_db
    elif pg_ours_running; then
        log "postgres: ours is starting up, waiting"
        pg_wait_ready
        pg_ensure_role_db
    elif port_open "$PG_PORT"; then
        die "127.0.0.1:$PG_PORT is taken by something that is not a ready Postgres; free it, set PGPORT_LEARNFLOW or DATABASE_URL"
    else
        pg_start
        pg_ensure_role_db
    fi
    PG_VERSION_STR="$("$PG_BIN/psql" -X -Atc 'SHOW server_version' "$DB_URL" 2>"$LOGS/psql-check.err")" || {
        show_tail "$LOGS/psql-check.err"
        die "cannot log in with $DB_URL (a reused server needs role and database learnflow/learnflow; or set DATABASE_URL)"
    }
    rm -f "$LOGS/psql-check.err"
}

# ---------------------------------------------------------------- Redis
redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]; }
redis_server_pid() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server 2>/dev/null | sed -n 's/^process_id:\([0-9]*\).*/\1/p'; }
redis_ours_running() {
    local pid
    pid="$(cat "$REDIS_DIR/redis.pid" 2>/dev/null)" || return 1
    alive "$pid" && [[ "$(redis_server_pid)" == "$pid" ]]
}

ensure_redis() {
    if [[ -n "${REDIS_URL:-}" ]]; then
        RD_URL="$REDIS_URL"
        log "redis: REDIS_URL given, not managed here"
        REDIS_VERSION_STR="$( (timeout 3 redis-cli -u "$RD_URL" info server 2>/dev/null || true) |
            sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p')"
        return
    fi
    RD_URL="redis://127.0.0.1:$REDIS_PORT/0"
    if redis_ping; then
        if redis_ours_running; then
            log "redis: already running from $REDIS_DIR, reusing"
        else
            log "redis: a server already answers on 127.0.0.1:$REDIS_PORT, reusing it"
            unmark_started redis
        fi
    elif port_open "$REDIS_PORT"; then
        die "127.0.0.1:$REDIS_PORT is taken by something that does not answer PING; free it or set REDIS_URL"
    else
        mkdir -p "$REDIS_DIR"
        printf '%s\n' "$REDIS_PORT" >"$REDIS_DIR/port" # for down.sh
        log "redis: starting on 127.0.0.1:$REDIS_PORT (log $REDIS_LOG)"
        mark_started redis
        # A cache for tests: no RDB snapshots, no AOF.
        redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
            --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_LOG" \
            --save '' --appendonly no </dev/null >/dev/null 2>"$LOGS/redis-start.err" ||
            {
                show_tail "$LOGS/redis-start.err" "$REDIS_LOG"
                die "redis-server failed to start"
            }
        local deadline=$((SECONDS + WAIT_SECS))
        until redis_ping; do
            if ((SECONDS >= deadline)); then
                show_tail "$REDIS_LOG"
                die "redis did not answer PING within ${WAIT_SECS}s"
            fi
            sleep 0.1
        done
    fi
    REDIS_VERSION_STR="$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info server | sed -n 's/^redis_version:\([^[:space:]]*\).*/\1/p')"
}

# ---------------------------------------------------------------- Kafka
# Asks the broker for metadata; succeeds when it lists at least one broker.
kafka_answers() { # kafka_answers BOOTSTRAP TIMEOUT_SECONDS
    [[ -x "$PY" ]] || PY="$(command -v python3)"
    "$PY" - "$1" "$2" <<'PYEOF' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
bootstrap, timeout = sys.argv[1], float(sys.argv[2])
admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0,
                     "socket.connection.setup.timeout.ms": int(timeout * 1000)})
md = admin.list_topics(timeout=timeout)
sys.exit(0 if md.brokers else 1)
PYEOF
}

kafka_ours_running() {
    local pid
    pid="$(cat "$KAFKA_PID" 2>/dev/null)" || return 1
    alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$KAFKA_CONF"
}

kafka_libs() {
    # Resolve once; re-resolve when pom.xml changes (version bump). ~/.m2 caches the download.
    local stamp want
    want="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
    stamp="$KAFKA_LIBS/.pom.sha256"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
        return
    fi
    log "kafka: resolving broker jars with Maven (cached in ~/.m2)"
    rm -rf "$KAFKA_LIBS.tmp"
    mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$KAFKA_LIBS.tmp" >"$LOGS/maven.log" 2>&1 ||
        {
            show_tail "$LOGS/maven.log"
            die "mvn dependency:copy-dependencies failed"
        }
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS" # atomic swap: a half-copied libs dir is never used
    printf '%s\n' "$want" >"$stamp"
}

kafka_write_config() {
    mkdir -p "$KAFKA_DIR/config" "$KAFKA_DIR/data"
    cat >"$KAFKA_CONF" <<EOF
# written by infra/up.sh: single-node KRaft broker+controller for tests
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=3
# tests create topics explicitly
auto.create.topics.enable=false
# one node: every replication factor and ISR minimum is 1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# no 3 s wait before the first consumer group rebalance
group.initial.rebalance.delay.ms=0
# the default 128 MiB cleaner buffer does not fit a 512 MiB heap
log.cleaner.dedupe.buffer.size=2097152
# 2 cores
num.network.threads=2
num.io.threads=4
EOF
}

kafka_start() {
    command -v java >/dev/null || die "java not found (Java 17 needed for Kafka)"
    command -v mvn >/dev/null || die "mvn not found (Maven needed to fetch Kafka jars)"
    mkdir -p "$KAFKA_DIR"
    kafka_libs
    kafka_write_config
    if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
        local cluster_id
        # A Kafka cluster id is 16 random bytes in unpadded base64url.
        # A leading '-' would be parsed as an option by the tool (Kafka's own generator avoids it too).
        cluster_id="-"
        while [[ "$cluster_id" == -* ]]; do
            cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        done
        log "kafka: formatting storage (cluster id $cluster_id)"
        # Static quorum (controller.quorum.voters), so no --standalone.
        java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$LOGS" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONF" >"$LOGS/kafka-format.log" 2>&1 ||
            {
                show_tail "$LOGS/kafka-format.log"
                die "kafka storage format failed"
            }
    fi
    log "kafka: starting on 127.0.0.1:$KAFKA_PORT (log $KAFKA_LOG, $LOGS/kafka-server.log)"
    mark_started kafka
    # setsid: own session, so a Ctrl-C or hang-up of the caller does not kill the broker;
    # stdin/stdout/stderr detached so `$(infra/up.sh)` does not wait on the broker's pipe.
    setsid java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$LOGS" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" </dev/null >>"$KAFKA_LOG" 2>&1 &
    local pid=$!
    printf '%s\n' "$pid" >"$KAFKA_PID"
    local deadline=$((SECONDS + WAIT_SECS))
    until port_open "$KAFKA_PORT" && kafka_answers "127.0.0.1:$KAFKA_PORT" 2; do
        if ! alive "$pid"; then
            show_tail "$KAFKA_LOG" "$LOGS/kafka-server.log"
            die "kafka exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            show_tail "$KAFKA_LOG" "$LOGS/kafka-server.log"
            die "kafka did not answer metadata on 127.0.0.1:$KAFKA_PORT within ${WAIT_SECS}s"
        fi
        sleep 0.2
    done
}

kafka_version_of_libs() {
    local jar
    jar="$(compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" | head -n 1)" || return 0
    jar="${jar##*/kafka_2.13-}"
    printf '%s\n' "${jar%.jar}"
}

ensure_kafka() {
    if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
        KF_BOOTSTRAP="$KAFKA_BOOTSTRAP_SERVERS"
        log "kafka: KAFKA_BOOTSTRAP_SERVERS given, not managed here"
        KAFKA_VERSION_STR="? (given)"
        return
    fi
    KF_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
    if port_open "$KAFKA_PORT" && kafka_answers "$KF_BOOTSTRAP" 5; then
        if kafka_ours_running; then
            log "kafka: already running from $KAFKA_DIR, reusing"
            KAFKA_VERSION_STR="$(kafka_version_of_libs)"
        else
            log "kafka: a broker already answers on $KF_BOOTSTRAP, reusing it"
            unmark_started kafka
            KAFKA_VERSION_STR="? (reused)"
        fi
        return
    fi
    if kafka_ours_running; then
        # Ours but not answering (still starting, or wedged): restart it cleanly.
        log "kafka: ours is running but does not answer; restarting it"
        mark_started kafka
        "$REPO/infra/down.sh" --only kafka >&2
    fi
    if port_open "$KAFKA_PORT" || port_open "$KAFKA_CONTROLLER_PORT"; then
        die "127.0.0.1:$KAFKA_PORT or :$KAFKA_CONTROLLER_PORT is taken by something that is not a Kafka broker; free it or set KAFKA_BOOTSTRAP_SERVERS"
    fi
    kafka_start
    KAFKA_VERSION_STR="$(kafka_version_of_libs)"
}

# ---------------------------------------------------------------- main
main() {
    local t0=${EPOCHREALTIME/[.,]/}
    mkdir -p "$LOGS"
    ensure_packages
    ensure_postgres
    ensure_redis
    ensure_kafka

    log "versions: postgres ${PG_VERSION_STR:-?}, redis ${REDIS_VERSION_STR:-?}, kafka ${KAFKA_VERSION_STR:-?}"
    log "started by infra/up.sh (stopped by infra/down.sh): $( (cat "$STARTED" 2>/dev/null || true) | tr '\n' ' ')"
    local ms=$(((${EPOCHREALTIME/[.,]/} - t0) / 1000))
    log "ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s"

    # %q keeps plain URLs verbatim and quotes anything eval would misread (&, ?, spaces).
    local env
    env="$(printf 'export DATABASE_URL=%q\nexport REDIS_URL=%q\nexport KAFKA_BOOTSTRAP_SERVERS=%q\n' \
        "$DB_URL" "$RD_URL" "$KF_BOOTSTRAP")"
    printf '%s\n' "$env" >"$STATE/env"
    printf '%s\n' "$env"
}

main "$@"
