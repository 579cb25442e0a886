#!/usr/bin/env bash
# Fuzz every parser that takes outside bytes (libFuzzer through cargo-fuzz), a short fixed time
# per target, and fail on the first crash, hang or failed property.
#
#   tests/fuzz.sh                                  # every target of every crate, FUZZ_SECONDS each
#   FUZZ_CRATES="models-bundle agent/update agent/usb" tests/fuzz.sh   # these crates only (CI: run-all.sh)
#   FUZZ_SECONDS=600 tests/fuzz.sh engine request  # one crate's fuzz dir, one target, longer
#
# Fuzz crates live in <crate>/fuzz (each its own workspace, so the root `cargo test` never
# builds them): models-bundle (GGUF headers, manifests, model names), engine (HTTP requests,
# options, token text), agent/rag (PDF, FHIR, text/markdown ingest, re-identification),
# agent/firewall (the policy TOML, the live ruleset), agent/update (the bundle manifest a stick hands
# the box, a full bundle's UKI: PE sections and PCR 11 prediction), agent/usb (a USB device's
# descriptors), agent (the agent's TOML configuration, the upload form). Seeds come from
# <crate>/fuzz/seeds/<target>, a dictionary from <crate>/fuzz/dicts/<target>.dict; the corpus
# grows in a temporary directory. The crates share one target directory, so libFuzzer itself is
# built once.
# A crashing input is kept in <crate>/fuzz/artifacts/<target>/; reproduce it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a TARGET FILE` in <crate>, make it a regression test in
# that crate's tests, and fix the bug.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`), a C++ compiler and stable Rust: the
# sanitizer flags are unstable, so RUSTC_BOOTSTRAP=1 lets the stable compiler take them.
# Builds go to $FUZZ_TARGET_DIR (default target/fuzz); the engine's links llama.cpp, so its
# first build takes as long as the engine's.
#
# Environment:
#   FUZZ_SECONDS     run time per target (default 20)
#   FUZZ_TARGET_DIR  cargo target directory for the instrumented builds
#   FUZZ_CRATES      the crates to fuzz, space-separated (default: all seven)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH="${FUZZ_SECONDS:-20}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$ROOT/target/fuzz}"
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never

die() { echo "fuzz: $*" >&2; exit 1; }
cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz is not installed: cargo install cargo-fuzz --locked"

read -r -a CRATES <<<"${FUZZ_CRATES:-models-bundle engine agent/rag agent/firewall agent/update agent/usb agent}"
if [ $# -ge 1 ]; then
    CRATES=("$1")
fi
ONLY_TARGET="${2:-}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
summary=()
t_start=$SECONDS
for crate in "${CRATES[@]}"; do
    dir="$ROOT/$crate/fuzz"
    [ -f "$dir/Cargo.toml" ] || die "$crate has no fuzz crate ($dir/Cargo.toml)"
    echo "=== build $crate/fuzz"
    t0=$SECONDS
    (cd "$ROOT/$crate" && cargo fuzz build -O -a --target-dir "$TARGET_DIR" ${ONLY_TARGET:+"$ONLY_TARGET"}) \
        || die "building $crate/fuzz failed"
    echo "=== build $crate/fuzz: $((SECONDS - t0)) s"
    targets=$(cd "$ROOT/$crate" && cargo fuzz list)
    for target in $targets; do
        [ -z "$ONLY_TARGET" ] || [ "$target" = "$ONLY_TARGET" ] || continue
        corpus="$WORK/${crate//\//_}-$target"
        mkdir -p "$corpus"
        [ -d "$dir/seeds/$target" ] && cp "$dir/seeds/$target"/* "$corpus"/
        extra=()
        [ -f "$dir/dicts/$target.dict" ] && extra+=("-dict=$dir/dicts/$target.dict")
        log="$WORK/${crate//\//_}-$target.log"
        echo "=== fuzz $crate $target (${SECONDS_EACH} s)"
        if ! (cd "$ROOT/$crate" && cargo fuzz run -O -a --target-dir "$TARGET_DIR" "$target" "$corpus" -- \
                -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 "${extra[@]}") > "$log" 2>&1; then
            tail -n 60 "$log"
            die "$crate $target FAILED: the crashing input is in $dir/artifacts/$target/"
        fi
        runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo "?")
        summary+=("$(printf '%-16s %-16s %12s executions' "$crate" "$target" "$runs")")
        echo "    $runs executions, no crash"
    done
done
echo
echo "=== fuzz summary ($((SECONDS - t_start)) s, ${SECONDS_EACH} s per target)"
printf '%s\n' "${summary[@]}"
