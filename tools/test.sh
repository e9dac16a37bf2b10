#!/usr/bin/env bash
# The test command: bring up (or reuse) real Postgres, Redis and Kafka, install grpcurl,
# run pytest against them (the tests start the mesh and Envoy themselves), then stop
# only what this run started. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

started_before="$(cat .infra/started 2>/dev/null || true)"
exports="$(bash infra/up.sh | grep '^export ')"
eval "$exports"
started_now=()
for part in $(cat .infra/started 2>/dev/null || true); do
  grep -qx "$part" <<<"$started_before" || started_now+=("$part")
done
cleanup() {
  for part in "${started_now[@]}"; do bash infra/down.sh --only "$part" || true; done
}
trap cleanup EXIT

GRPCURL_DIR="$(bash infra/tools.sh)"
export PATH="$GRPCURL_DIR:$PATH"

echo "infrastructure: DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS" >&2
.venv/bin/python -m pytest "$@"
