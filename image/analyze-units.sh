#!/bin/bash
# Print `systemd-analyze security --offline=yes` for every Wardbox unit, as installed in the
# image: the cached OS tree from build.sh plus the image/wardbox/ layer (so users, groups
# and unit search paths are the image's, not this host's).
#
#   image/analyze-units.sh [--out DIR] [--detail]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT="${WARDBOX_IMAGE_OUT:-$REPO/target/image}"
DETAIL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --detail) DETAIL=1; shift ;;
        *) echo "analyze-units.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
OS=$(ls -d "$OUT"/os-* 2>/dev/null | grep -v '\.' | head -n 1 || true)
[ -n "$OS" ] || { echo "analyze-units.sh: no OS tree in $OUT: run image/build.sh first" >&2; exit 1; }
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
cp -al "$OS/." "$ROOT/"
cp -a --remove-destination "$REPO/image/wardbox/." "$ROOT/"
for unit in "$REPO"/image/wardbox/usr/lib/systemd/system/*.service; do
    name=$(basename "$unit")
    if [ "$DETAIL" = 1 ]; then
        echo "== $name"
        systemd-analyze security --offline=yes --root="$ROOT" "$name" 2>&1 | grep -E "✗|Overall" || true
    else
        systemd-analyze security --offline=yes --root="$ROOT" "$name" 2>&1 | tail -n 1 | sed 's/^→ //'
    fi
done
