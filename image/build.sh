#!/bin/bash
# Build the Wardbox appliance image.
#
#   image/build.sh [--out DIR] [--no-cargo] [--rebuild-os] [--uefi]
#
# Phases (each prints its duration):
#   1. binaries   cargo build --release of the agent (`wardbox`); the engine
#                 (`wardbox-engine`) is included when target/release/wardbox-engine exists
#                 (it takes 6-15 minutes to build: build it with
#                 `cargo build --release -p wardbox-engine` first to include it), or the
#                 file WARDBOX_ENGINE_BIN names. CARGO_TARGET_DIR is honoured.
#   2. os         the Debian OS tree from image/mkosi.conf (mkosi 14, Format=directory).
#                 Cached under $OUT/os-<key>, key = sha256 of every input of the tree
#                 (mkosi.conf, mkosi.postinst, mkosi.extra/ with modes, mkosi version);
#                 downloaded packages are cached in $OUT/cache/apt.
#   3. root       the OS tree plus the Wardbox layer: image/wardbox/ (units, their helper
#                 scripts, /etc/wardbox/wardbox.toml; units enabled with systemctl --root),
#                 the binaries and the firmware policy. The layer is not part of the OS
#                 cache key, so changing Wardbox code never rebuilds the OS. Then checked
#                 (every shared library resolves inside the tree; no compiler, no SSH, no
#                 package manager), then a read-only ext4 root file system (`mkfs.ext4 -d`)
#                 and the slot image: that file system followed by its dm-verity hash tree
#                 (image/verity.sh), whose root hash goes on the kernel command line.
#   4. disk       the system disk: GPT with root-a (the slot image above), root-b (empty, for A/B
#                 updates) and state (blank; formatted at first boot). Data lives on its own
#                 partition (PARTLABEL wardbox-data) that the box encrypts at first boot.
#   5. boot       kernel, initrd and kernel command line for direct boot
#                 (qemu -kernel/-initrd/-append, as the qemu test does).
#   6. uefi       only with --uefi: image/uefi.sh makes the UEFI boot chain from the same
#                 kernel, initrd and root: a signed UKI (wardbox-<version>+3.efi), signed
#                 systemd-boot, the ESP, and $OUT/uefi/disk.raw (ESP, root-a, root-b, state),
#                 plus the same UKI for slot B in $OUT/uefi/slot-b/ (its command line names
#                 root-b: a full update bundle carries one UKI per slot, docs/update.md),
#                 with TEST Secure Boot keys generated in $OUT/uefi/test-keys unless
#                 WARDBOX_SECURE_BOOT_KEYS names the fleet's keys; the root's firmware policy
#                 pins those keys ([secure_boot_keys]). Needs sbsigntool, mtools,
#                 dosfstools, systemd-boot-efi and virt-fw-vars (tests/install-deps.sh).
#
# This host cannot make a vfat ESP (no vfat in its kernel, no device-mapper), so the boot
# files are kept for direct boot. On a build host that can, the same tree becomes a bootable
# disk with an ESP holding a signed unified kernel image: see docs/image.md,
# "The bootable disk".
#
# The system version (what `wardbox update` compares bundles against, written into the root
# as `version:` in /usr/lib/wardbox-image-info) is the workspace version, or
# WARDBOX_SYSTEM_VERSION (MAJOR.MINOR.PATCH) for a release.
#
# The update subsystem's first trusted TUF root (docs/update.md, the key ceremony's
# 1.root.json) is the file WARDBOX_UPDATE_ROOT names, installed as
# /usr/share/wardbox/update/1.root.json; without it the image can apply no update bundle
# (the build says so).
#
# Outputs in $OUT (default: <repo>/target/image):
#   system.raw      the system disk (GPT)         vmlinuz, initrd.img, cmdline.txt
#   root.ext4       the root file system alone    image-info.txt (versions, sha256s)
#   root.img        the slot image (root.ext4 + dm-verity hash tree; what an update bundle carries)
#   root.verity     the command line arguments that open root.img verified
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
IMAGE="$REPO/image"
OUT="${WARDBOX_IMAGE_OUT:-$REPO/target/image}"
CARGO_BUILD=1
REBUILD_OS=0
UEFI=0

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --no-cargo) CARGO_BUILD=0; shift ;;
        --rebuild-os) REBUILD_OS=1; shift ;;
        --uefi) UEFI=1; shift ;;
        -h|--help) sed -n '2,56p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# Fixed partition identities and types (DISK_GUID, ROOT_A_UUID, ..., STATE_SIZE_MIB), shared
# with image/uefi.sh.
# shellcheck source=partitions.env
. "$IMAGE/partitions.env"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

phase_start=0
phase() {
    phase_start=$(date +%s.%N)
    echo "== build.sh: $1"
}
phase_done() {
    local end
    end=$(date +%s.%N)
    printf '== build.sh: %-9s %6.1f s\n' "$1" "$(echo "$end - $phase_start" | bc)"
}
die() {
    echo "build.sh: $*" >&2
    exit 1
}

need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool': apt-get install -y mkosi debootstrap systemd-container e2fsprogs fdisk bc cryptsetup-bin"
    done
}
need mkosi debootstrap systemd-nspawn mkfs.ext4 sfdisk bc sha256sum veritysetup
[ "$(id -u)" = 0 ] || die "mkosi and mkfs need root (run as root, as CI does)"

# ---------------------------------------------------------------- 1. binaries
phase "binaries"
if [ "$CARGO_BUILD" = 1 ]; then
    (cd "$REPO" && cargo build --release -p wardbox)
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
AGENT="$TARGET_DIR/release/wardbox"
# WARDBOX_ENGINE_BIN picks another engine build (e.g. a debug build, for tests only).
ENGINE="${WARDBOX_ENGINE_BIN:-$TARGET_DIR/release/wardbox-engine}"
[ -x "$AGENT" ] || die "no agent binary at $AGENT (run without --no-cargo)"
if [ -x "$ENGINE" ]; then
    echo "build.sh: including the engine $ENGINE"
    ENGINE_INCLUDED=yes
else
    echo "build.sh: NOTE: no engine at $ENGINE: the image is built WITHOUT wardbox-engine" \
         "(cargo build --release -p wardbox-engine to include it)"
    ENGINE_INCLUDED=no
fi
phase_done binaries

# ---------------------------------------------------------------- 2. os tree
phase "os"
os_key() {
    # Everything the OS tree depends on, with file modes (the postinst must stay executable).
    {
        mkosi --version
        cd "$IMAGE"
        find mkosi.conf mkosi.postinst mkosi.extra -print0 | LC_ALL=C sort -z \
            | xargs -0 stat -c '%n %a %F' 
        find mkosi.conf mkosi.postinst mkosi.extra -type f -print0 | LC_ALL=C sort -z \
            | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
}
KEY=$(os_key)
OS="$OUT/os-$KEY"
if [ "$REBUILD_OS" = 1 ]; then
    rm -rf "$OS"
fi
if [ -d "$OS" ] && [ -f "$OS.done" ]; then
    echo "build.sh: OS tree cached ($OS)"
else
    rm -rf "$OS" "$OS.done" "$OS.manifest"
    mkdir -p "$OUT/cache/apt"
    # --nspawn-keep-unit: mkosi runs scripts in systemd-nspawn inside our own scope (no
    # systemd as PID 1 on the build hosts).
    (cd "$IMAGE" && mkosi --nspawn-keep-unit --force --cache="$OUT/cache/apt" --output="$OS" build)
    touch "$OS.done"
    # Older trees are never used again.
    for old in "$OUT"/os-*; do
        case "$old" in "$OS"|"$OS".*) ;; *) rm -rf "$old" ;; esac
    done
fi
phase_done os

# ---------------------------------------------------------------- 3. root
phase "root"
STAGING="$OUT/root-staging"
rm -rf "$STAGING"
# Hard links: instant, and the cached tree is never written (new files replace, not modify).
cp -al "$OS" "$STAGING"
# The Wardbox layer: copied (not hard-linked) so the cached tree is never touched.
cp -a --no-preserve=ownership --remove-destination "$IMAGE/wardbox/." "$STAGING/"
systemctl --root="$STAGING" --quiet enable wardbox-firewall.service wardbox-unlock.service \
    wardbox.service wardbox-engine.service wardbox-engine-proxy.socket wardbox-egress-probe.service \
    wardbox-status-console.service wardbox-boot-healthy.service wardbox-report-probe.service \
    wardbox-update-probe.service wardbox-restore-probe.service wardbox-update-install.socket \
    wardbox-usb-window.socket
install -D -m 0755 "$AGENT" "$STAGING/usr/bin/wardbox"
if [ "$ENGINE_INCLUDED" = yes ]; then
    install -D -m 0755 "$ENGINE" "$STAGING/usr/bin/wardbox-engine"
fi
install -D -m 0644 "$REPO/firmware-policy/default.toml" "$STAGING/usr/share/wardbox/firmware-policy.toml"
if [ -n "${WARDBOX_UPDATE_ROOT:-}" ]; then
    [ -f "$WARDBOX_UPDATE_ROOT" ] || die "WARDBOX_UPDATE_ROOT=$WARDBOX_UPDATE_ROOT is not a file"
    install -D -m 0644 "$WARDBOX_UPDATE_ROOT" "$STAGING/usr/share/wardbox/update/1.root.json"
    echo "build.sh: the trusted update root is $WARDBOX_UPDATE_ROOT"
    UPDATE_ROOT=yes
else
    echo "build.sh: NOTE: no WARDBOX_UPDATE_ROOT: the image has no trusted update root and applies no update bundle"
    UPDATE_ROOT=no
fi
if [ "$UEFI" = 1 ]; then
    # The box's policy pins the Secure Boot keys the chain is signed with (phase 6).
    "$IMAGE/uefi.sh" --keys-only --out "$OUT/uefi" ${WARDBOX_SECURE_BOOT_KEYS:+--keys "$WARDBOX_SECURE_BOOT_KEYS"}
    cat "$OUT/uefi/secure-boot-keys.toml" >> "$STAGING/usr/share/wardbox/firmware-policy.toml"
    # The volume key is bound to PCR 7 and to PCR 11 values the PCR-signing key signed (each
    # UKI carries its signature): a new signed UKI unlocks without a reseal (docs/volume.md).
    install -D -m 0644 "$OUT/uefi/pcr-sign.pub.pem" "$STAGING/usr/share/wardbox/pcr-sign.pub.pem"
    {
        echo
        echo "# The fleet's PCR-signing key (image/uefi.sh); the UKI's .pcrsig is signed with it."
        echo "[signed_pcr11]"
        echo "public_key = \"/usr/share/wardbox/pcr-sign.pub.pem\""
    } >> "$STAGING/usr/share/wardbox/firmware-policy.toml"
fi

WS_VERSION=$(awk -F'"' '/^version *=/ {print $2; exit}' "$REPO/Cargo.toml")
SYSTEM_VERSION=${WARDBOX_SYSTEM_VERSION:-$WS_VERSION}
[[ "$SYSTEM_VERSION" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]] \
    || die "system version '$SYSTEM_VERSION' is not MAJOR.MINOR.PATCH (WARDBOX_SYSTEM_VERSION)"
COMMIT=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
KVER=$(basename "$(ls "$OS"/boot/vmlinuz-* | head -n 1)" | sed 's/^vmlinuz-//')
[ -n "$KVER" ] && [ -f "$OS/boot/initrd.img-$KVER" ] || die "the OS tree has no kernel+initrd in /boot"
{
    echo "image: wardbox"
    # The system version the update subsystem reads (agent/src/update: running_version).
    echo "version: $SYSTEM_VERSION"
    echo "source: $COMMIT$DIRTY"
    echo "os-tree: $KEY"
    echo "kernel: $KVER"
    echo "engine: $ENGINE_INCLUDED"
    echo "update-root: $UPDATE_ROOT"
    echo "agent-sha256: $(sha256sum "$AGENT" | cut -d' ' -f1)"
    [ "$ENGINE_INCLUDED" = yes ] && echo "engine-sha256: $(sha256sum "$ENGINE" | cut -d' ' -f1)"
} > "$STAGING/usr/lib/wardbox-image-info"
chmod 0644 "$STAGING/usr/lib/wardbox-image-info"

# Checks on what is in the root: nothing the box does not need.
problems=""
for bin in usr/bin/wardbox usr/bin/wardbox-engine; do
    [ -e "$STAGING/$bin" ] || continue
    missing=$(chroot "$STAGING" /usr/bin/ldd "/$bin" 2>&1 | grep "not found" || true)
    [ -z "$missing" ] || problems="$problems\n  /$bin needs libraries the image lacks: $missing"
done
for forbidden in usr/bin/cc usr/bin/gcc usr/bin/c++ usr/bin/rustc usr/bin/cargo usr/sbin/sshd \
        usr/bin/apt usr/bin/apt-get usr/bin/make usr/bin/python3; do
    [ ! -e "$STAGING/$forbidden" ] || problems="$problems\n  /$forbidden is in the image"
done
[ -z "$(ls -A "$STAGING/var/cache/apt" 2>/dev/null)" ] || problems="$problems\n  /var/cache/apt is not empty"
[ -z "$problems" ] || die "the root file system fails its checks:$(printf "$problems")"

ROOT_IMG="$OUT/root.ext4"
rm -f "$ROOT_IMG"
used_mib=$(du -sm --apparent-size "$STAGING" | cut -f1)
ROOT_MIB=$(( used_mib * 5 / 4 + 64 ))
# The file system is read-only on the box; the spare quarter is for A/B updates that grow.
SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s) \
    mkfs.ext4 -q -F -L wardbox-root -U "$ROOT_A_UUID" -E root_owner=0:0 -m 0 \
        -d "$STAGING" "$ROOT_IMG" "${ROOT_MIB}M"
rm -rf "$STAGING"
# The slot image: the file system, then its dm-verity hash tree (image/verity.sh). Its root
# hash goes on the UKI's signed command line, so the initrd opens the root verified.
SLOT_IMG="$OUT/root.img"
VERITY_ARGS=$("$IMAGE/verity.sh" "$ROOT_IMG" "$SLOT_IMG")
echo "$VERITY_ARGS" > "$OUT/root.verity"
SLOT_MIB=$(( ($(stat -c %s "$SLOT_IMG") + 1048575) / 1048576 ))
phase_done root

# ---------------------------------------------------------------- 4. disk
phase "disk"
DISK="$OUT/system.raw"
rm -f "$DISK"
# 1 MiB alignment; partitions: root-a, root-b, state; 1 MiB spare for the backup GPT.
DISK_MIB=$(( 1 + SLOT_MIB + SLOT_MIB + STATE_SIZE_MIB + 1 ))
truncate -s "${DISK_MIB}M" "$DISK"
sfdisk -q "$DISK" <<EOF
label: gpt
label-id: $DISK_GUID
unit: sectors
first-lba: 2048
start=2048, size=$(( SLOT_MIB * 2048 )), type=$ROOT_TYPE, uuid=$ROOT_A_UUID, name="wardbox-root-a"
size=$(( SLOT_MIB * 2048 )), type=$ROOT_TYPE, uuid=$ROOT_B_UUID, name="wardbox-root-b"
size=$(( STATE_SIZE_MIB * 2048 )), type=$LINUX_TYPE, uuid=$STATE_UUID, name="wardbox-state"
EOF
dd if="$SLOT_IMG" of="$DISK" bs=1M seek=1 conv=notrunc,sparse status=none
phase_done disk

# ---------------------------------------------------------------- 5. boot
phase "boot"
cp "$OS/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$OS/boot/initrd.img-$KVER" "$OUT/initrd.img"
# The tree's own file (a symlink could point at the build host's); the UKI's .osrel.
[ -f "$OS/usr/lib/os-release" ] && [ ! -L "$OS/usr/lib/os-release" ] || die "the OS tree has no /usr/lib/os-release file"
cp "$OS/usr/lib/os-release" "$OUT/os-release"
# ro: the root is never written. panic=-1 / no reboot loops hide nothing: qemu exits.
echo "root=PARTUUID=$ROOT_A_UUID ro rootfstype=ext4 usbcore.authorized_default=0 $VERITY_ARGS console=ttyS0,115200 systemd.show_status=1 panic=30" > "$OUT/cmdline.txt"
{
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "version: $SYSTEM_VERSION"
    echo "source: $COMMIT$DIRTY"
    echo "os-tree: $KEY"
    echo "kernel: $KVER"
    echo "engine: $ENGINE_INCLUDED"
    echo "update-root: $UPDATE_ROOT"
    echo "verity: $VERITY_ARGS"
    (cd "$OUT" && sha256sum root.ext4 root.img vmlinuz initrd.img os-release cmdline.txt)
} > "$OUT/image-info.txt"
phase_done boot

# ---------------------------------------------------------------- 6. uefi
if [ "$UEFI" = 1 ]; then
    phase "uefi"
    # '+' separates the boot counter in the UKI's name: the dirty marker becomes "-dirty".
    UKI_VERSION="$SYSTEM_VERSION-$COMMIT${DIRTY:+-dirty}"
    UKI_CMDLINE="$VERITY_ARGS console=ttyS0,115200 systemd.show_status=1 panic=30"
    "$IMAGE/uefi.sh" --kernel "$OUT/vmlinuz" --initrd "$OUT/initrd.img" --os-release "$OUT/os-release" \
        --version "$UKI_VERSION" --root "$SLOT_IMG" --out "$OUT/uefi" \
        ${WARDBOX_SECURE_BOOT_KEYS:+--keys "$WARDBOX_SECURE_BOOT_KEYS"} --cmdline-extra "$UKI_CMDLINE"
    # The same UKI for slot B: a release's full update bundle carries both (wardbox-bundle
    # build --uki-a ... --uki-b ...), and the box installs the one for the slot it writes.
    "$IMAGE/uefi.sh" --uki-only --slot b --kernel "$OUT/vmlinuz" --initrd "$OUT/initrd.img" \
        --os-release "$OUT/os-release" --version "$UKI_VERSION" --out "$OUT/uefi/slot-b" \
        --keys "${WARDBOX_SECURE_BOOT_KEYS:-$OUT/uefi/test-keys}" --cmdline-extra "$UKI_CMDLINE"
    phase_done uefi
fi

echo "build.sh: done: $OUT/system.raw ($(du -h --apparent-size "$DISK" | cut -f1) apparent," \
     "$(du -h "$DISK" | cut -f1) on disk), kernel $KVER, engine included: $ENGINE_INCLUDED"
