#!/usr/bin/env bash
# buf breaking (FILE rules) between the contracts now and the descriptor image committed
# at a git ref (default: origin/main when it exists, else HEAD). Both sides are images
# written by tools/gen.py, so no BSR and no network are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${1:-$(git rev-parse --verify -q origin/main >/dev/null && echo origin/main || echo HEAD)}"
against="$(mktemp --suffix=.pb)"
trap 'rm -f "$against"' EXIT
if ! git show "$ref:gen/learnflow.pb" >"$against" 2>/dev/null; then
  echo "buf breaking: no gen/learnflow.pb at $ref; nothing to compare against"
  exit 0
fi
.venv/bin/buf breaking "gen/learnflow.pb#format=binpb" --against "$against#format=binpb" --config buf.yaml
echo "buf breaking: no breaking change against $ref"
