#!/usr/bin/env bash
# Install the Debian packages the README's commands need, when they are missing.
#
# Usage: tools/system_packages.sh PKG...   (as root, or with sudo available)
#
# `make run` and `make test` call it, so a fresh Debian machine with Python needs
# nothing else by hand; CI (.ci/run) installs nothing itself and relies on this too.
set -euo pipefail

need=()
for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
((${#need[@]})) || exit 0

as_root=()
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || {
        printf '[packages] missing %s and not root: sudo apt-get install -y %s\n' \
            "${need[*]}" "${need[*]}" >&2
        exit 1
    }
    as_root=(sudo)
fi
printf '[packages] apt-get install %s\n' "${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
