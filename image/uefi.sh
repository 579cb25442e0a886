#!/bin/bash
# Make the UEFI boot chain of the system disk: a signed unified kernel image (UKI), signed
# systemd-boot, the ESP, a UEFI variable store with the Secure Boot keys enrolled, and the GPT
# disk (ESP, root-a, root-b, state). Nothing is mounted: the ESP is written with mtools, the
# disk with sfdisk and dd, so it works on build hosts without vfat or loop devices.
#
#   image/uefi.sh --kernel FILE --initrd FILE --os-release FILE --version VERSION --out DIR
#                 [--cmdline-extra "ARGS"] [--root SLOT.img | --root-mib N] [--keys DIR]
#                 [--esp-mib N] [--tries N]
#   image/uefi.sh --keys-only --out DIR [--keys DIR]
#   image/uefi.sh --uki-only --kernel ... --out DIR [--keys DIR] [--cmdline-extra "ARGS"] [--slot b]
#
#   --version        the OS version in the UKI's name: wardbox-<version>+<tries>.efi
#                    (letters, digits, '.', '_', '-'; '+' is the boot counter's separator)
#   --cmdline-extra  appended to the command line, which starts with
#                    "root=PARTUUID=<root-a> ro rootfstype=ext4 usbcore.authorized_default=0";
#                    it is part of the signed UKI
#   --slot           a (default) or b: the A/B slot whose root partition the command line
#                    names. A UKI boots exactly one slot, so a release (and a full update
#                    bundle) carries one UKI per slot; only --uki-only makes a slot-b UKI
#   --root           the slot image written into root-a (image/build.sh's root.img: the root
#                    file system and its dm-verity hash tree, whose arguments the build passes
#                    in --cmdline-extra); root-a and root-b are its size rounded up to MiB.
#                    Without it root-a is left blank, --root-mib big (for boot-chain tests)
#   --keys           a directory with PK.key/PK.crt, KEK.key/KEK.crt, db.key/db.crt (PEM)
#                    and pcr-sign.key (RSA, PEM: signs the UKI's PCR 11 values).
#                    Default <out>/test-keys: generated there when absent, with "TEST KEY -
#                    NOT FOR PRODUCTION" in every certificate's subject. A box in the field
#                    is enrolled with the clinic fleet's keys instead (docs/image.md, "Keys").
#   --tries          boot tries before systemd-boot gives up on the UKI (default 3)
#   --keys-only      only find (or generate) the keys and write secure-boot-keys.toml and
#                    pcr-sign.pub.pem: the image build pins them in the firmware policy before
#                    the root is sealed
#   --uki-only       only the keys and the signed UKI (with cmdline.txt and pcr11.json): another
#                    UKI for an existing chain, e.g. an update's, or the qemu test's, whose
#                    command line carries its test switches
#
# Outputs in DIR:
#   wardbox-<version>+<tries>.efi   the UKI, signed with db.key
#   wardbox-<version>.unsigned.efi  the same UKI before signing (tests: must not boot)
#   esp.img                         the ESP (FAT32): EFI/BOOT/BOOTX64.EFI and
#                                   EFI/systemd/systemd-bootx64.efi (signed systemd-boot),
#                                   EFI/Linux/<the UKI>, loader/loader.conf (timeout 0)
#   OVMF_VARS.fd                    OVMF's blank variable store with PK, KEK, db enrolled and
#                                   Secure Boot on (for qemu; a real box enrols in its setup)
#   disk.raw                        GPT: ESP, wardbox-root-a, wardbox-root-b, wardbox-state
#   cmdline.txt                     the command line inside the UKI
#   pcr11.json                      PCR 11 (sha256) as systemd-stub will leave it, per boot
#                                   phase (systemd-measure calculate; no "phase": right after
#                                   the stub); the UKI carries the values signed with
#                                   pcr-sign.key (.pcrsig) and the public key (.pcrpkey)
#   secure-boot-keys.toml           sha256 of each certificate (DER): the firmware policy's
#                                   [secure_boot_keys] table, to append to the policy
#   pcr-sign.pub.pem                the PCR-signing public key (the image installs it for the
#                                   firmware policy's [signed_pcr11])
#   uefi-info.txt                   versions, section layout, sha256s
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=partitions.env
. "$REPO/image/partitions.env"

STUB=${WARDBOX_EFI_STUB:-/usr/lib/systemd/boot/efi/linuxx64.efi.stub}
SDBOOT=${WARDBOX_SYSTEMD_BOOT:-/usr/lib/systemd/boot/efi/systemd-bootx64.efi}
OVMF_VARS_BLANK=${WARDBOX_OVMF_VARS_BLANK:-/usr/share/OVMF/OVMF_VARS_4M.fd}
# The owner GUID recorded with each enrolled certificate (any fixed GUID; this one is Wardbox's).
OWNER_GUID=3b0e7f5a-6c2d-4e9f-8a1b-5d4c3e2f1a09

KERNEL="" INITRD="" OSREL="" VERSION="" OUT="" EXTRA="" ROOT_IMG="" ROOT_MIB=8 KEYS="" ESP_MIB=256 TRIES=3 KEYS_ONLY=0 UKI_ONLY=0 SLOT=a
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) KERNEL="$2"; shift 2 ;;
        --initrd) INITRD="$2"; shift 2 ;;
        --os-release) OSREL="$2"; shift 2 ;;
        --version) VERSION="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --cmdline-extra) EXTRA="$2"; shift 2 ;;
        --root) ROOT_IMG="$2"; shift 2 ;;
        --root-mib) ROOT_MIB="$2"; shift 2 ;;
        --keys) KEYS="$2"; shift 2 ;;
        --esp-mib) ESP_MIB="$2"; shift 2 ;;
        --tries) TRIES="$2"; shift 2 ;;
        --slot) SLOT="$2"; shift 2 ;;
        --keys-only) KEYS_ONLY=1; shift ;;
        --uki-only) UKI_ONLY=1; shift ;;
        -h|--help) sed -n '2,56p' "$0"; exit 0 ;;
        *) echo "uefi.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() {
    echo "uefi.sh: $*" >&2
    exit 1
}
phase_start=0
phase() {
    phase_start=$(date +%s.%N)
    echo "== uefi.sh: $1"
}
phase_done() {
    printf '== uefi.sh: %-9s %6.1f s\n' "$1" "$(echo "$(date +%s.%N) - $phase_start" | bc)"
}

[ -n "$OUT" ] || die "--out is required (see --help)"
if [ "$KEYS_ONLY" = 0 ]; then
    for arg in KERNEL INITRD OSREL VERSION; do
        [ -n "${!arg}" ] || die "--$(echo "$arg" | tr 'A-Z' 'a-z' | sed 's/osrel/os-release/') is required (see --help)"
    done
    for f in "$KERNEL" "$INITRD" "$OSREL"; do
        [ -f "$f" ] || die "no such file: $f"
    done
    [[ "$VERSION" =~ ^[A-Za-z0-9._-]+$ ]] || die "version '$VERSION' may only hold letters, digits, '.', '_', '-'"
fi
[[ "$TRIES" =~ ^[1-9]$ ]] || die "--tries must be 1 to 9, not '$TRIES'"
case "$SLOT" in
    a) ROOT_UUID=$ROOT_A_UUID ;;
    b) ROOT_UUID=$ROOT_B_UUID ;;
    *) die "--slot must be a or b, not '$SLOT'" ;;
esac
# The disk's ESP holds the UKI that boots root-a (where --root is written).
[ "$SLOT" = a ] || [ "$UKI_ONLY" = 1 ] || die "--slot b only with --uki-only (the disk boots slot a)"
[[ "$ESP_MIB" =~ ^[0-9]+$ ]] && [ "$ESP_MIB" -ge 64 ] || die "--esp-mib must be at least 64 (FAT32)"
[[ "$ROOT_MIB" =~ ^[0-9]+$ ]] && [ "$ROOT_MIB" -ge 1 ] || die "--root-mib must be a positive number"
[ -z "$ROOT_IMG" ] || [ -f "$ROOT_IMG" ] || die "no such root file system: $ROOT_IMG"

VIRT_FW_VARS=${WARDBOX_VIRT_FW_VARS:-$(command -v virt-fw-vars || true)}
MEASURE=${WARDBOX_SYSTEMD_MEASURE:-/usr/lib/systemd/systemd-measure}
missing=""
for tool in objcopy objdump sbsign sbverify mkfs.vfat mmd mcopy mdir sfdisk openssl bc sha256sum swtpm; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -n "$VIRT_FW_VARS" ] && [ -x "$VIRT_FW_VARS" ] || missing="$missing virt-fw-vars"
[ -f "$STUB" ] || missing="$missing $STUB"
[ -f "$SDBOOT" ] || missing="$missing $SDBOOT"
[ -x "$MEASURE" ] || missing="$missing $MEASURE (package systemd)"
[ -f "$OVMF_VARS_BLANK" ] || missing="$missing $OVMF_VARS_BLANK"
[ -z "$missing" ] || die "missing:$missing. Install: apt-get install -y binutils sbsigntool dosfstools mtools fdisk" \
    "openssl bc systemd-boot-efi ovmf; virt-fw-vars: pip install virt-firmware (tests/install-deps.sh does both)"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
KEYS=${KEYS:-$OUT/test-keys}
UKI_NAME="wardbox-$VERSION+$TRIES.efi"
WORK=$(mktemp -d "$OUT/.uefi-work.XXXXXX")
SWTPM_PID=""
trap '[ -z "$SWTPM_PID" ] || kill "$SWTPM_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- keys
phase "keys"
if [ ! -f "$KEYS/db.key" ]; then
    [ "$KEYS" = "$OUT/test-keys" ] || die "no db.key in $KEYS (only the default <out>/test-keys is generated)"
    mkdir -p "$KEYS"
    chmod 0700 "$KEYS"
    for name in PK KEK db; do
        openssl req -quiet -new -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -subj "/CN=Wardbox $name - TEST KEY - NOT FOR PRODUCTION/" \
            -keyout "$KEYS/$name.key" -out "$KEYS/$name.crt" 2>/dev/null
    done
    echo "These keys were generated by image/uefi.sh for tests. They are TEST KEYS: never enrol them in a box in the field." > "$KEYS/README"
    echo "uefi.sh: generated TEST Secure Boot keys in $KEYS"
else
    echo "uefi.sh: Secure Boot keys from $KEYS"
fi
# The PCR-signing key: signs the PCR 11 values the UKI will produce (.pcrsig), so a volume
# key bound to a signed PCR 11 policy unlocks with every UKI this key signed.
if [ ! -f "$KEYS/pcr-sign.key" ] && [ "$KEYS" = "$OUT/test-keys" ]; then
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KEYS/pcr-sign.key" 2>/dev/null
fi
[ -f "$KEYS/pcr-sign.key" ] || die "no pcr-sign.key in $KEYS (the PCR 11 signing key, RSA, PEM)"
openssl pkey -in "$KEYS/pcr-sign.key" -pubout -out "$KEYS/pcr-sign.pub.pem"
cp "$KEYS/pcr-sign.pub.pem" "$OUT/pcr-sign.pub.pem"
for name in PK KEK db; do
    [ -f "$KEYS/$name.crt" ] || die "no $name.crt in $KEYS"
done
fingerprint() {
    openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1
}
{
    echo
    echo "# The Secure Boot keys image/uefi.sh enrolled and signed with (sha256 of the DER"
    echo "# certificates; keys: $KEYS)."
    echo "[secure_boot_keys]"
    for name in PK KEK db; do
        echo "$(echo "$name" | tr 'A-Z' 'a-z') = [\"$(fingerprint "$KEYS/$name.crt")\"]"
    done
} > "$OUT/secure-boot-keys.toml"
phase_done keys
[ "$KEYS_ONLY" = 0 ] || exit 0

# ---------------------------------------------------------------- uki
phase "uki"
# usbcore.authorized_default=0: the kernel binds no driver to a USB device until udev's
# `wardbox usb authorize` lets it in (keyboards, hubs; a stick only in an admin's window).
# On the signed command line, so it holds from the first device the kernel sees.
printf '%s' "root=PARTUUID=$ROOT_UUID ro rootfstype=ext4 usbcore.authorized_default=0${EXTRA:+ $EXTRA}" > "$OUT/cmdline.txt"
# The new sections go after the stub's last one, each at an address aligned to the stub's
# SectionAlignment, so none overlaps another (systemd 252 has no ukify to do this).
align=$((16#$(objdump -p "$STUB" | awk '/^SectionAlignment/ {print $2}')))
[ "$align" -gt 0 ] || die "cannot read SectionAlignment of $STUB"
# "start end name" (decimal) of each section of a PE file.
section_spans() {
    objdump -h -w "$1" | while read -r idx name size vma _; do
        [[ "$idx" =~ ^[0-9]+$ ]] || continue
        echo "$((16#$vma)) $((16#$vma + 16#$size)) $name"
    done
}
stub_end=$(section_spans "$STUB" | sort -n -k2 | tail -n 1 | cut -d' ' -f2)
[ -n "$stub_end" ] && [ "$stub_end" -gt 0 ] || die "cannot read the section table of $STUB"
# PCR 11 as systemd-stub will measure these sections (and .pcrpkey), predicted and signed by
# systemd-measure for the boot phases the box unlocks in: ":" right after the stub (an initrd
# without systemd, like initramfs-tools), "sysinit" and "sysinit:ready" (systemd-pcrphase on
# the root). The signature travels in the UKI (.pcrsig); the stub hands it and the public key
# to the initrd in /.extra/.
measure_args=(--linux="$KERNEL" --osrel="$OSREL" --cmdline="$OUT/cmdline.txt" --initrd="$INITRD"
    --pcrpkey="$KEYS/pcr-sign.pub.pem" --bank=sha256 --phase=: --phase=sysinit --phase=sysinit:ready)
"$MEASURE" calculate "${measure_args[@]}" --json=short > "$OUT/pcr11.json" 2>/dev/null \
    || die "systemd-measure calculate failed"
# systemd 252's systemd-measure computes the policy digest it signs on a TPM: a throw-away
# software TPM here (nothing is stored in it).
mkdir -p "$WORK/tpm"
swtpm socket --tpm2 --tpmstate dir="$WORK/tpm" --flags startup-clear,not-need-init \
    --server type=unixio,path="$WORK/tpm/sock" --ctrl type=unixio,path="$WORK/tpm/sock.ctrl" \
    > "$WORK/tpm/log" 2>&1 &
SWTPM_PID=$!
for _ in $(seq 50); do [ -S "$WORK/tpm/sock" ] && [ -S "$WORK/tpm/sock.ctrl" ] && break; sleep 0.1; done
"$MEASURE" sign "${measure_args[@]}" --private-key="$KEYS/pcr-sign.key" --public-key="$KEYS/pcr-sign.pub.pem" \
    --tpm2-device="swtpm:path=$WORK/tpm/sock" --json=short > "$WORK/pcrsig.json" 2> "$WORK/tpm/measure.log" \
    || { cat "$WORK/tpm/measure.log" >&2; die "systemd-measure sign failed"; }
kill "$SWTPM_PID" 2>/dev/null || true
wait "$SWTPM_PID" 2>/dev/null || true
SWTPM_PID=""
next=$stub_end
sections=()
layout=""
for spec in ".osrel=$OSREL" ".cmdline=$OUT/cmdline.txt" ".linux=$KERNEL" ".initrd=$INITRD" \
        ".pcrsig=$WORK/pcrsig.json" ".pcrpkey=$KEYS/pcr-sign.pub.pem"; do
    name=${spec%%=*}
    file=${spec#*=}
    vma=$(( (next + align - 1) / align * align ))
    size=$(stat -Lc %s "$file")
    sections+=(--add-section "$name=$file" --change-section-vma "$name=$(printf '0x%x' "$vma")")
    layout="$layout$(printf '%-9s vma 0x%09x size %10d\n' "$name" "$vma" "$size")\n"
    next=$(( vma + size ))
done
UNSIGNED="$OUT/wardbox-$VERSION.unsigned.efi"
objcopy "${sections[@]}" "$STUB" "$UNSIGNED"
# Check the result: every added section where it was put, none overlapping.
section_spans "$UNSIGNED" | sort -n | awk 'NR > 1 && $1 < prev_end { print "overlap: " prev_name " and " $3; bad = 1 } { prev_end = $2; prev_name = $3 } END { exit bad }' \
    || die "the UKI's sections overlap (see above)"
for name in .osrel .cmdline .linux .initrd .pcrsig .pcrpkey; do
    objdump -h -w "$UNSIGNED" | awk -v n="$name" '$2 == n { found = 1 } END { exit !found }' || die "the UKI lacks $name"
done
sbsign --key "$KEYS/db.key" --cert "$KEYS/db.crt" --output "$OUT/$UKI_NAME" "$UNSIGNED" 2>/dev/null
sbsign --key "$KEYS/db.key" --cert "$KEYS/db.crt" --output "$WORK/systemd-bootx64.efi" "$SDBOOT" 2>/dev/null
for signed in "$OUT/$UKI_NAME" "$WORK/systemd-bootx64.efi"; do
    sbverify --cert "$KEYS/db.crt" "$signed" >/dev/null 2>&1 || die "sbverify refuses $signed"
done
phase_done uki
if [ "$UKI_ONLY" = 1 ]; then
    echo "uefi.sh: done: $OUT/$UKI_NAME (command line: $(cat "$OUT/cmdline.txt"))"
    exit 0
fi

# ---------------------------------------------------------------- esp
phase "esp"
ESP="$OUT/esp.img"
rm -f "$ESP"
mkfs.vfat -F 32 -n WARDBOX-ESP -i 5741524 -C "$ESP" $(( ESP_MIB * 1024 )) >/dev/null
cat > "$WORK/loader.conf" <<EOF
timeout 0
default wardbox-*
editor no
auto-entries no
EOF
mmd -i "$ESP" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/EFI/Linux ::/loader
mcopy -i "$ESP" "$WORK/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$ESP" "$WORK/systemd-bootx64.efi" ::/EFI/systemd/systemd-bootx64.efi
mcopy -i "$ESP" "$OUT/$UKI_NAME" "::/EFI/Linux/$UKI_NAME"
mcopy -i "$ESP" "$WORK/loader.conf" ::/loader/loader.conf
phase_done esp

# ---------------------------------------------------------------- vars
phase "vars"
"$VIRT_FW_VARS" --input "$OVMF_VARS_BLANK" --output "$OUT/OVMF_VARS.fd" \
    --set-pk "$OWNER_GUID" "$KEYS/PK.crt" --add-kek "$OWNER_GUID" "$KEYS/KEK.crt" \
    --add-db "$OWNER_GUID" "$KEYS/db.crt" --secure-boot >/dev/null 2>"$WORK/vars.log" \
    || { cat "$WORK/vars.log" >&2; die "virt-fw-vars failed"; }
phase_done vars

# ---------------------------------------------------------------- disk
phase "disk"
if [ -n "$ROOT_IMG" ]; then
    ROOT_MIB=$(( ($(stat -Lc %s "$ROOT_IMG") + 1048575) / 1048576 ))
fi
DISK="$OUT/disk.raw"
rm -f "$DISK"
# 1 MiB alignment; ESP, root-a, root-b, state; 1 MiB spare for the backup GPT.
truncate -s $(( (1 + ESP_MIB + ROOT_MIB + ROOT_MIB + STATE_SIZE_MIB + 1) ))M "$DISK"
sfdisk -q "$DISK" <<EOF
label: gpt
label-id: $DISK_GUID
unit: sectors
first-lba: 2048
start=2048, size=$(( ESP_MIB * 2048 )), type=$ESP_TYPE, uuid=$ESP_UUID, name="esp"
size=$(( ROOT_MIB * 2048 )), type=$ROOT_TYPE, uuid=$ROOT_A_UUID, name="wardbox-root-a"
size=$(( ROOT_MIB * 2048 )), type=$ROOT_TYPE, uuid=$ROOT_B_UUID, name="wardbox-root-b"
size=$(( STATE_SIZE_MIB * 2048 )), type=$LINUX_TYPE, uuid=$STATE_UUID, name="wardbox-state"
EOF
dd if="$ESP" of="$DISK" bs=1M seek=1 conv=notrunc,sparse status=none
if [ -n "$ROOT_IMG" ]; then
    dd if="$ROOT_IMG" of="$DISK" bs=1M seek=$(( 1 + ESP_MIB )) conv=notrunc,sparse status=none
fi
phase_done disk

{
    echo "uki: $UKI_NAME"
    echo "cmdline: $(cat "$OUT/cmdline.txt")"
    echo "stub: $STUB"
    echo "systemd-boot: $SDBOOT"
    echo "esp-offset-mib: 1"
    printf "sections:\n$layout"
    cat "$OUT/secure-boot-keys.toml"
    (cd "$OUT" && sha256sum "$UKI_NAME" esp.img OVMF_VARS.fd)
} > "$OUT/uefi-info.txt"
echo "uefi.sh: done: $DISK ($UKI_NAME; Secure Boot keys in $KEYS)"
