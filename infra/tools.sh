#!/usr/bin/env bash
# Install developer/test tools into $REPO/.infra/bin (gitignored). Idempotent.
#
# Usage: infra/tools.sh      -> prints the bin dir on stdout; progress on stderr
#
# grpcurl: built from source with the Go toolchain (go install via the Go module proxy),
# so no release-binary download is needed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$REPO/.infra/bin"
GRPCURL_VERSION="v1.9.4" # latest 1.9.x on proxy.golang.org

# Go is usually in /usr/local/go/bin, which `make` may not have on PATH.
export PATH="$PATH:/usr/local/go/bin"

log() { printf '[tools] %s\n' "$*" >&2; }

mkdir -p "$BIN"

# Skip when present at the pinned version (go install embeds the module version).
if [[ -x "$BIN/grpcurl" ]] && go version -m "$BIN/grpcurl" 2>/dev/null |
    grep -qE "^[[:space:]]+mod[[:space:]]+github.com/fullstorydev/grpcurl[[:space:]]+$GRPCURL_VERSION([[:space:]]|$)"; then
    log "grpcurl $GRPCURL_VERSION already in $BIN"
elif [[ -x "$BIN/grpcurl" ]] && ! command -v go >/dev/null; then
    log "grpcurl present in $BIN (version not checked: no go toolchain)"
else
    command -v go >/dev/null || {
        log "ERROR: go not found; install Go >= 1.25 or put grpcurl in $BIN"
        exit 1
    }
    log "installing grpcurl $GRPCURL_VERSION into $BIN"
    # CGO off: a static binary that survives libc changes. -X main.version: as in the release
    # builds, so `grpcurl -version` prints the version instead of "dev build <no version set>".
    GOBIN="$BIN" CGO_ENABLED=0 go install -ldflags "-X main.version=$GRPCURL_VERSION" \
        "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" >&2
fi

printf '%s\n' "$BIN"
