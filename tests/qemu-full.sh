#!/usr/bin/env bash
# The full qemu matrix: the end-to-end scenarios too slow for CI (tests/run-all.sh runs the CI
# ones: qemu_image, qemu_uefi_chain). Run by hand before a release, as root (after
# tests/install-deps.sh), on a machine with time to spare; each scenario prints its phases'
# durations.
#
#   qemu_update   a full system update on the appliance image: v1 (slot A) installs a signed
#                 full bundle v2 from an attached disk, reboots into slot B through
#                 systemd-boot, is blessed; then an unhealthy v3 is tried three times and the
#                 box falls back to v2 by itself; power cuts while the slot and the ESP are
#                 written and before the blessing; refusals; a models-only bundle with the real
#                 engine (docs/update.md, "The full update in qemu"). Measured: see there.
#   qemu_restore  box A backs up to a USB backup disk plugged in while it runs; box B (another
#                 TPM, a blank data disk) restores from it with the key from A's sheet, and A's
#                 clinician's question is answered citing the same note (docs/backup.md,
#                 "Restore onto a replacement box, in qemu").
#
# Environment: as the qemu tier (WARDBOX_E2E_KEEP=1 keeps each work directory, WARDBOX_E2E_ACCEL=kvm
# where KVM works). A missing tool FAILS the scenario, naming it.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "qemu-full: the qemu scenarios need root; run it as root" >&2; exit 1; }
    exec sudo env "PATH=$PATH" "HOME=$HOME" ${CARGO_TARGET_DIR:+"CARGO_TARGET_DIR=$CARGO_TARGET_DIR"} "$0" "$@"
fi
# One qemu scenario at a time (they share target/image and the machine's cores).
failed=0
for scenario in qemu_update qemu_restore; do
    t0=$SECONDS
    echo "=== $scenario"
    if cargo test -p wardbox-e2e --test "$scenario" -- --nocapture; then
        echo "=== $scenario: ok ($((SECONDS - t0)) s)"
    else
        echo "=== $scenario: FAILED ($((SECONDS - t0)) s)"
        failed=1
    fi
done
exit $failed
