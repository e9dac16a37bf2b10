#!/usr/bin/env bash
# Paths and helpers shared by infra/up.sh and infra/down.sh (sourced, not run).
# shellcheck disable=SC2034  # the variables are used by the scripts that source this

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$REPO/.infra"
LOGS="$STATE/logs"
STARTED="$STATE/started"
WAIT_SECS="${INFRA_WAIT_SECS:-60}"

PG_PORT="${PGPORT_LEARNFLOW:-5432}"
PG_DIR="$STATE/pg"
PG_DATA="$PG_DIR/data"
PG_LOG="$LOGS/postgres.log"

REDIS_PORT=6379
REDIS_DIR="$STATE/redis"
REDIS_LOG="$LOGS/redis.log"

KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_DIR="$STATE/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_CONF="$KAFKA_DIR/config/server.properties"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$LOGS/kafka.log"

log() { printf '[infra] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
