#!/bin/bash
# A small guest for the UEFI boot-chain test (tests/qemu_uefi_chain.rs): Debian's kernel and a
# busybox initrd that reports what the firmware and the bootloader did, blesses the boot with
# the real systemd-bless-boot, and powers off. It stands in for the appliance's OS only so that
# the chain (OVMF with Secure Boot enforcing -> signed systemd-boot -> signed UKI -> kernel) can
# be booted in seconds instead of minutes; the chain itself is built by image/uefi.sh exactly as
# for the appliance.
#
#   tests/uefi-chain-guest.sh OUT_DIR
#
# Writes OUT_DIR/vmlinuz, OUT_DIR/initrd.img, OUT_DIR/os-release. Downloads (once, cached in
# OUT_DIR/debs) the packages linux-image-amd64 points to, systemd-boot and libsystemd-shared
# with `apt-get download` (no package is installed, no hook runs), and takes busybox from the
# host's busybox-static.
set -euo pipefail

OUT=${1:?usage: tests/uefi-chain-guest.sh OUT_DIR}
die() {
    echo "uefi-chain-guest.sh: $*" >&2
    exit 1
}
for tool in apt-get apt-cache dpkg-deb gzip ldd; do
    command -v "$tool" >/dev/null || die "missing program $tool"
done
BUSYBOX=/bin/busybox
# Static: the initrd has no other libc for it (ldd fails on a static binary).
{ [ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1; } \
    || die "needs a static busybox at $BUSYBOX (apt-get install -y busybox-static)"

mkdir -p "$OUT/debs"
OUT=$(cd "$OUT" && pwd)
kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kernel_pkg" ] || die "apt knows no linux-image-amd64 (apt-get update?)"
for pkg in "$kernel_pkg" systemd-boot libsystemd-shared; do
    version=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
    [ -n "$version" ] && [ "$version" != "(none)" ] || die "apt offers no $pkg"
    if [ ! -d "$OUT/debs/$pkg-$version" ]; then
        rm -rf "$OUT/debs/$pkg-"*
        (cd "$OUT/debs" && apt-get download -q "$pkg=$version" >/dev/null 2>&1) || die "apt-get download $pkg=$version failed"
        mkdir -p "$OUT/debs/$pkg-$version.tmp"
        dpkg-deb -x "$OUT/debs/${pkg}_"*.deb "$OUT/debs/$pkg-$version.tmp"
        rm -f "$OUT/debs/${pkg}_"*.deb
        mv "$OUT/debs/$pkg-$version.tmp" "$OUT/debs/$pkg-$version"
    fi
    eval "dir_${pkg//[-.]/_}=\$OUT/debs/\$pkg-\$version"
done
KDIR=$(eval echo "\$dir_${kernel_pkg//[-.]/_}")
KVER=${kernel_pkg#linux-image-}
# Built already from the same packages, busybox and this script: nothing to do.
stamp="$(basename "$KDIR") $(basename "$dir_systemd_boot") $(basename "$dir_libsystemd_shared") $(sha256sum "$BUSYBOX" "$0" | cut -d' ' -f1 | tr '\n' ' ')"
if [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ] && [ -f "$OUT/os-release" ] && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "uefi-chain-guest.sh: kernel $KVER, initrd cached"
    exit 0
fi
rm -f "$OUT/stamp"
cp "$KDIR/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,dev,proc,sys,efi,lib/modules,run,tmp}
cp "$BUSYBOX" "$ROOT/bin/busybox"
# The modules the init loads, in dependency order (the package ships no modules.dep).
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk \
        fat vfat nls_cp437 nls_ascii efivarfs; do
    f=$(find "$KDIR/lib/modules/$KVER" -name "$m.ko" | head -n 1)
    [ -n "$f" ] || die "the kernel package has no $m.ko"
    cp "$f" "$ROOT/lib/modules/"
done
# systemd-bless-boot with the libraries it links (libsystemd-shared from its package, the rest
# from the host, which runs the same Debian release).
BLESS="$dir_systemd_boot/lib/systemd/systemd-bless-boot"
[ -x "$BLESS" ] || die "systemd-boot has no /lib/systemd/systemd-bless-boot"
mkdir -p "$ROOT/lib/systemd" "$ROOT/usr/lib/x86_64-linux-gnu/systemd" "$ROOT/lib64"
cp "$BLESS" "$ROOT/lib/systemd/"
SHARED_DIR="$dir_libsystemd_shared/usr/lib/x86_64-linux-gnu/systemd"
cp "$SHARED_DIR"/libsystemd-shared-*.so "$ROOT/usr/lib/x86_64-linux-gnu/systemd/"
libs=$(LD_LIBRARY_PATH="$SHARED_DIR" ldd "$BLESS" "$SHARED_DIR"/libsystemd-shared-*.so)
if echo "$libs" | grep -q "not found"; then
    die "libraries of systemd-bless-boot missing on this host: $(echo "$libs" | grep "not found" | sort -u | tr '\n' ' ')"
fi
for lib in $(echo "$libs" | awk '/=> \// {print $3} /^\s*\/lib64\// {print $1}' | sort -u); do
    case "$lib" in "$SHARED_DIR"/*) continue ;; esac
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
[ -e "$ROOT/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"

cat > "$ROOT/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "wardbox-uefi-chain: $*" > /dev/console; }
say "userspace reached"
say "cmdline: $(cat /proc/cmdline)"
insmod /lib/modules/efivarfs.ko || say "insmod efivarfs failed"
mount -t efivarfs efivarfs /sys/firmware/efi/efivars || say "efivarfs: mount failed"
GLOBAL=8be4df61-93ca-11d2-aa0d-00e098032b8c
LOADER=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
# The Secure Boot key variables as the firmware holds them (hex, one line each), for the test
# to check with the firmware policy's code.
for var in PK-$GLOBAL KEK-$GLOBAL db-d719b2cb-3d3a-4596-a3bc-dad00e67656f; do
    say "efivar ${var%%-*} $(od -An -tx1 -v /sys/firmware/efi/efivars/$var 2>/dev/null | tr -d ' \n')"
done
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk fat vfat nls_cp437 nls_ascii; do
    insmod /lib/modules/$m.ko || say "insmod $m failed"
done
# efivarfs files: 4 bytes of attributes, then the value.
byte() { set -- $(od -An -tu1 "$1" 2>/dev/null); echo "${5:-unreadable}"; }
text() { tail -c +5 "$1" 2>/dev/null | tr -d '\000'; }
say "SecureBoot=$(byte /sys/firmware/efi/efivars/SecureBoot-$GLOBAL)"
say "LoaderEntrySelected=$(text /sys/firmware/efi/efivars/LoaderEntrySelected-$LOADER)"
say "LoaderBootCountPath=$(text /sys/firmware/efi/efivars/LoaderBootCountPath-$LOADER)"
# What systemd-stub measured (PCR 11, when the box has a TPM) and handed over (/.extra).
if [ -r /sys/class/tpm/tpm0/pcr-sha256/11 ]; then
    say "PCR11=$(cat /sys/class/tpm/tpm0/pcr-sha256/11)"
else
    say "PCR11=no TPM"
fi
present() { [ -s "$1" ] && echo present || echo absent; }
say "extra: pcrsig $(present /.extra/tpm2-pcr-signature.json) pcrpkey $(present /.extra/tpm2-pcr-public-key.pem)"
# A UKI built with wardbox.chain_test=unhealthy plays an OS whose agent fails its health check:
# it is never blessed, so systemd-boot counts its tries down and then falls back.
if grep -q "wardbox.chain_test=unhealthy" /proc/cmdline; then
    say "unhealthy: not blessed"
elif [ -z "$(text /sys/firmware/efi/efivars/LoaderBootCountPath-$LOADER)" ]; then
    say "no boot counting in effect: nothing to bless"
else
    i=0
    while [ ! -b /dev/vda1 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    if mount -t vfat /dev/vda1 /efi; then
        SYSTEMD_ESP_PATH=/efi SYSTEMD_RELAX_ESP_CHECKS=1 /lib/systemd/systemd-bless-boot good > /dev/console 2>&1 \
            && say "blessed" || say "systemd-bless-boot failed ($?)"
        umount /efi
    else
        say "cannot mount the ESP /dev/vda1"
    fi
fi
sync
say "done"
poweroff -f
EOF
chmod 0755 "$ROOT/init"
# busybox's own cpio: no other archiver needed. Owned by root (the test runs as root).
(cd "$ROOT" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -1 > "$OUT/initrd.img"

cat > "$OUT/os-release" <<EOF
PRETTY_NAME="Wardbox boot-chain test guest (Debian kernel $KVER, busybox)"
ID=wardbox
VERSION_ID=chain-test
EOF
echo "$stamp" > "$OUT/stamp"
echo "uefi-chain-guest.sh: kernel $KVER, initrd $(du -h "$OUT/initrd.img" | cut -f1)"
