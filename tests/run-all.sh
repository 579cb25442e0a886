#!/usr/bin/env bash
# Run every test tier: unit tests, and the tiers against real components (swtpm, LUKS2 files,
# nftables in network namespaces, the real model through the real engine, headless Chromium,
# slapd, the image in qemu). Run as root (after tests/install-deps.sh). A tier whose component
# is missing FAILS with a message naming it; nothing is skipped in silence.
#
# Environment:
#   WARDBOX_SKIP_QEMU=1  leave out the qemu image test (agent build, OS tree, four boots: ~25 minutes
#                        cold after the engine build, 2 cores), said loudly; CI runs it.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
export WARDBOX_MODEL_CACHE="${WARDBOX_MODEL_CACHE:-$HOME/.cache/wardbox/models}"

failed=()
passed=()
# Each tier's output is also kept in target/test-logs/, so the summary at the end can repeat why
# a tier failed: CI shows only the tail of a long run, which is the last tier's output.
LOGS="$PWD/target/test-logs"
mkdir -p "$LOGS"
tier_log() { echo "$LOGS/$(echo "$1" | tr -c 'a-zA-Z0-9\n' '-').log"; }
step() {
    local name=$1; shift
    local t0=$SECONDS log rc
    log=$(tier_log "$name")
    echo
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
        echo "=== $name: ok ($((SECONDS - t0)) s)"
        passed+=("$name")
    else
        echo "=== $name: FAILED ($((SECONDS - t0)) s, exit $rc; output in $log)"
        failed+=("$name")
    fi
}

# Why a tier failed, in a few lines: each panic with the message after it, and cargo's errors.
why_failed() {
    local log
    log=$(tier_log "$1")
    [ -f "$log" ] || return 0
    {
        grep -a -E -A45 "panicked at" "$log" | grep -a -v -E "^ +[0-9]+: |^ +at |stack backtrace:"
        grep -a -E -A3 "^error(\[|:)" "$log" | grep -a -v -E "^error: test failed|^ +Running "
    } | head -150
}

if [ "$(id -u)" -ne 0 ]; then
    # The firewall, TPM and image tiers need root: re-run through sudo, keeping the toolchain's PATH.
    command -v sudo >/dev/null || { echo "run-all: the firewall, TPM and image tiers need root, and sudo is not installed; run it as root" >&2; exit 1; }
    exec sudo env "PATH=$PATH" "HOME=$HOME" "$0" "$@"
fi

# A cold run peaks at about 15 GB under the target directory (measured on a fresh clone: the
# workspace's test binaries, the release engine, the fuzz targets, the OS image and a qemu
# scenario's disks). With less than 25 GB free, say so now: the failure would otherwise be a
# linker's "No space left on device" in every tier.
need_gb=25
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$target_dir"
free_gb=$(( $(df -Pk "$target_dir" | awk 'NR == 2 { print $4 }') / 1024 / 1024 ))
if [ "$free_gb" -lt "$need_gb" ]; then
    echo "run-all: WARNING: $free_gb GB free under $target_dir; a cold run needs about $need_gb GB" \
        "(a warm target directory needs less). Tiers may fail with 'No space left on device'." >&2
fi

# The release engine serves the model tests of every crate (a debug llama.cpp is ~20x slower).
step "build engine" cargo build --release -p wardbox-engine --bin wardbox-engine
export WARDBOX_ENGINE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/wardbox-engine"
step "fetch test and embedding models" models-bundle/fetch-test-model.sh
step "engine tests" cargo test --release -p wardbox-engine --no-fail-fast
# Default members: agent (with web, browser, ldap, swtpm, netns, report tiers), firewall, volume,
# gpu, rag, firmware-policy, models-bundle, report (swtpm quote), update (bundles), alerts, usb.
# Run once: a test that fails now and then is found and fixed, never retried.
step "workspace tests" cargo test --no-fail-fast
# A short fixed fuzz run of what a USB stick hands the box (models-bundle: GGUF headers and
# manifests; update: the bundle manifest and a full bundle's UKI; usb: the descriptors a device
# sends when plugged in), 15 s a target; measured here 79 s + 263 s to build the instrumented
# crates (usb: 1 s more, libFuzzer is already built), about 2 minutes of fuzzing. The other targets
# (engine and retrieval link llama.cpp and SQLCipher built again with sanitizers, tens of
# minutes cold on 2 cores; the firewall policy; the agent's configuration and upload form, which
# build the whole agent) run by hand: `tests/fuzz.sh` runs every target (docs/engine.md).
step "fuzz (short)" env FUZZ_CRATES="models-bundle agent/update agent/usb" FUZZ_SECONDS=15 tests/fuzz.sh
# The appliance image, booted five times in qemu with a software TPM (tests/qemu_image.rs), and
# the UEFI chain (tests/qemu_uefi_chain.rs: signed UKIs under Secure Boot, refusals, boot counting
# and fallback; seven short boots, about 3 minutes).
# It ships the release engine built above (WARDBOX_ENGINE_BIN), so the image build compiles
# only the agent. Measured on 2 cores: agent release build after the engine's, mkosi OS tree
# (cold), root/disk, five TCG boots (the fifth stops in the initrd): see docs/image.md.
# WARDBOX_SKIP_QEMU=1 leaves it out (a laptop without the time), said loudly and never counted
# as a pass.
if [ "${WARDBOX_SKIP_QEMU:-}" = 1 ]; then
    echo
    echo "=== qemu image test: NOT RUN (WARDBOX_SKIP_QEMU=1). CI runs it; so should you before a release."
else
    # The CI tests by name: tests/qemu-full.sh runs the scenarios too slow for CI (qemu_update).
    step "qemu image test" env WARDBOX_E2E_STRICT=1 cargo test -p wardbox-e2e --no-fail-fast \
        --lib --test qemu_image --test qemu_uefi_chain -- --nocapture
fi

echo
echo "=== summary: ${#passed[@]} tiers passed, ${#failed[@]} failed"
for f in "${failed[@]}"; do
    echo
    echo "FAILED: $f; why:"
    why_failed "$f" | sed 's/^/    /'
done
echo
for f in "${failed[@]}"; do echo "FAILED: $f"; done
[ ${#failed[@]} -eq 0 ]
