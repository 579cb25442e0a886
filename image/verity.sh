#!/bin/bash
# Make a system slot image: the root file system followed by its dm-verity hash tree.
#
#   image/verity.sh ROOT.ext4 SLOT.img
#
# Writes SLOT.img (ROOT.ext4's bytes, then veritysetup's superblock and hash tree starting at
# the file system's end) and prints the kernel command line arguments that open it:
#
#   wardbox.verity_root_hash=<sha256 hex> wardbox.verity_hash_offset=<bytes>
#
# They go on the UKI's signed command line; the initrd (mkosi.extra/etc/initramfs-tools/
# scripts/local-premount/wardbox-verity) opens the root through dm-verity with them, and the
# agent checks them against the slot before it makes an update bootable (docs/image.md,
# "The verified root"). The salt is the root file system's own sha256 and the superblock's
# UUID is fixed, so the same file system always gives the same image and root hash
# (reproducible builds). veritysetup works on plain files here: no device-mapper is needed to
# make the tree, only to open it.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: image/verity.sh ROOT.ext4 SLOT.img" >&2; exit 2; }
ROOT_FS=$1 SLOT=$2
command -v veritysetup >/dev/null || { echo "verity.sh: missing veritysetup (apt-get install -y cryptsetup-bin)" >&2; exit 1; }
[ -f "$ROOT_FS" ] || { echo "verity.sh: no such file: $ROOT_FS" >&2; exit 1; }
BLOCK=4096
size=$(stat -Lc %s "$ROOT_FS")
[ $(( size % BLOCK )) -eq 0 ] || { echo "verity.sh: $ROOT_FS is $size bytes, not a whole number of $BLOCK-byte blocks" >&2; exit 1; }
salt=$(sha256sum "$ROOT_FS" | cut -d' ' -f1)
cp --sparse=always "$ROOT_FS" "$SLOT.tmp"
# The superblock's UUID: fixed (any constant; a random one would make every build differ).
veritysetup format --hash=sha256 --data-block-size=$BLOCK --hash-block-size=$BLOCK \
    --data-blocks=$(( size / BLOCK )) --hash-offset="$size" --salt="$salt" \
    --uuid=5741524d-424f-5856-4552-495459000001 "$SLOT.tmp" "$SLOT.tmp" > "$SLOT.format.txt"
root_hash=$(awk '/^Root hash:/ {print $3}' "$SLOT.format.txt")
rm -f "$SLOT.format.txt"
[[ "$root_hash" =~ ^[0-9a-f]{64}$ ]] || { echo "verity.sh: veritysetup printed no root hash" >&2; exit 1; }
mv "$SLOT.tmp" "$SLOT"
echo "wardbox.verity_root_hash=$root_hash wardbox.verity_hash_offset=$size"
