#!/usr/bin/env bash
# Go load generators for the benchmarks, built from the Go module proxy into .infra/bin.
#
#   ghz  gRPC load (github.com/bojand/ghz/cmd/ghz)
#   hey  HTTP load (github.com/rakyll/hey)
#
# Idempotent: a tool already built at the pinned version is left alone (the version is
# recorded next to the binary). Needs `go` (1.21+) on PATH; override the versions with
# GHZ_VERSION / HEY_VERSION, the destination with BIN_DIR.
#
# Note: proxy.golang.org's version *list* for ghz stops at v0.93.0, so `@latest`
# resolves there; v0.120.0 (May 2024, the newest release) is served when asked for by
# name, hence the explicit pins.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${BIN_DIR:-$ROOT/.infra/bin}"
GHZ_VERSION="${GHZ_VERSION:-v0.120.0}"
HEY_VERSION="${HEY_VERSION:-v0.1.5}"

if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin /usr/lib/go/bin; do
    if [ -x "$candidate/go" ]; then PATH="$candidate:$PATH"; break; fi
  done
fi
command -v go >/dev/null 2>&1 || { echo "tools.sh: go is not installed" >&2; exit 1; }

mkdir -p "$BIN_DIR"

build() {  # name module version
  local name="$1" module="$2" version="$3"
  local stamp="$BIN_DIR/.$name.version"
  if [ -x "$BIN_DIR/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$module@$version" ]; then
    return 0
  fi
  echo "building $name ($module@$version) into $BIN_DIR" >&2
  GOBIN="$BIN_DIR" GOFLAGS="${GOFLAGS:--buildvcs=false}" go install "$module@$version"
  echo "$module@$version" > "$stamp"
}

build ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION"
build hey github.com/rakyll/hey "$HEY_VERSION"

if [ "${1:-}" = "--print" ]; then
  echo "ghz=$BIN_DIR/ghz ($GHZ_VERSION)"
  echo "hey=$BIN_DIR/hey ($HEY_VERSION)"
fi
