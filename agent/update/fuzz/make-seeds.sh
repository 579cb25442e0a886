#!/usr/bin/env bash
# Writes the `uki` and `pcrsig` targets' seeds into seeds/uki/ and seeds/pcrsig/:
#   signed.efi  a real signed UKI, made the way image/uefi.sh makes one: systemd's stub with
#               .osrel, .cmdline, .linux, .initrd, .pcrsig (systemd-measure sign, on a throw-away
#               software TPM) and .pcrpkey added by objcopy. The kernel and initrd are small
#               stand-ins (the measurement does not look inside them), so the seed stays small.
#   minimal.efi the smallest image the reader takes: DOS header, PE signature, a COFF header
#               without an optional header, and the measured sections with a few bytes each.
#   pcrsig/signed     signed.efi's .pcrsig, a NUL, its .pcrpkey (the pcrsig target's input form)
#   pcrsig/spki.der   the same key as DER SubjectPublicKeyInfo, pcrsig/pkcs1.der as PKCS#1
# Needs systemd-boot-efi, systemd (systemd-measure), binutils, openssl and swtpm
# (tests/install-deps.sh installs them). Rerun only to change the seeds; they are committed.
set -euo pipefail
cd "$(dirname "$0")"
OUT=$PWD/seeds/uki
PCRSIG=$PWD/seeds/pcrsig
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
MEASURE=/usr/lib/systemd/systemd-measure
for need in "$STUB" "$MEASURE"; do [ -e "$need" ] || { echo "make-seeds: missing $need" >&2; exit 1; }; done
for tool in objcopy objdump openssl swtpm python3; do
    command -v "$tool" >/dev/null || { echo "make-seeds: missing $tool" >&2; exit 1; }
done
mkdir -p "$OUT" "$PCRSIG"
W=$(mktemp -d)
SWTPM_PID=
cleanup() { [ -z "$SWTPM_PID" ] || kill "$SWTPM_PID" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

head -c 2048 /dev/zero | tr '\0' 'K' > "$W/linux"
head -c 1024 /dev/zero | tr '\0' 'I' > "$W/initrd"
printf 'ID=wardbox\nVERSION_ID=seed\n' > "$W/osrel"
printf 'root=PARTLABEL=wardbox-a ro quiet usbcore.authorized_default=0' > "$W/cmdline"
openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/pcr.key"
openssl pkey -pubout -in "$W/pcr.key" -out "$W/pcr.pub.pem"

mkdir -p "$W/tpm"
swtpm socket --tpm2 --flags startup-clear,not-need-init --tpmstate "dir=$W/tpm" \
    --server "type=unixio,path=$W/tpm/sock" --ctrl "type=unixio,path=$W/tpm/sock.ctrl" >/dev/null 2>&1 &
SWTPM_PID=$!
for _ in $(seq 100); do [ -S "$W/tpm/sock" ] && break; sleep 0.05; done
"$MEASURE" sign --linux="$W/linux" --osrel="$W/osrel" --cmdline="$W/cmdline" --initrd="$W/initrd" \
    --pcrpkey="$W/pcr.pub.pem" --bank=sha256 --json=short --phase=: --phase=sysinit --phase=sysinit:ready \
    --private-key="$W/pcr.key" --public-key="$W/pcr.pub.pem" --tpm2-device="swtpm:path=$W/tpm/sock" > "$W/pcrsig"

# After the stub's last section, each page-aligned (as uefi.sh places them).
next=0
while read -r index _ size vma _; do
    [[ "$index" =~ ^[0-9]+$ ]] || continue
    (( 16#$vma + 16#$size > next )) && next=$(( 16#$vma + 16#$size ))
done < <(objdump -h -w "$STUB")
args=()
for section in osrel cmdline linux initrd pcrsig; do
    vma=$(( (next + 4095) / 4096 * 4096 ))
    args+=(--add-section ".$section=$W/$section" --change-section-vma ".$section=$(printf '0x%x' "$vma")")
    next=$(( vma + $(stat -c %s "$W/$section") ))
done
vma=$(( (next + 4095) / 4096 * 4096 ))
args+=(--add-section ".pcrpkey=$W/pcr.pub.pem" --change-section-vma ".pcrpkey=$(printf '0x%x' "$vma")")
objcopy "${args[@]}" "$STUB" "$OUT/signed.efi"
{ cat "$W/pcrsig"; printf '\0'; cat "$W/pcr.pub.pem"; } > "$PCRSIG/signed"
openssl pkey -pubin -in "$W/pcr.pub.pem" -outform DER -out "$PCRSIG/spki.der"
openssl rsa -pubin -in "$W/pcr.pub.pem" -RSAPublicKey_out -outform DER -out "$PCRSIG/pkcs1.der" 2>/dev/null

python3 - "$OUT/minimal.efi" <<'EOF'
import struct, sys
sections = [(b".linux", b"kernel"), (b".osrel", b"ID=wardbox\n"), (b".cmdline", b"ro quiet"),
            (b".initrd", b"initrd"), (b".pcrpkey", b"-----BEGIN PUBLIC KEY-----\n"),
            (b".pcrsig", b'{"sha256":[{"pcrs":[11],"pkfp":"00","pol":"00","sig":"AA=="}]}')]
pe_at = 0x40
table = pe_at + 4 + 20
out = bytearray(table + 40 * len(sections))
out[0:2] = b"MZ"
out[0x3c:0x40] = struct.pack("<I", pe_at)
out[pe_at:pe_at + 4] = b"PE\0\0"
out[pe_at + 4:pe_at + 8] = struct.pack("<HH", 0x8664, len(sections))
for i, (name, data) in enumerate(sections):
    at = table + 40 * i
    out[at:at + 8] = name.ljust(8, b"\0")
    out[at + 8:at + 12] = struct.pack("<I", len(data))
    out[at + 16:at + 24] = struct.pack("<II", len(data), len(out))
    out += data
open(sys.argv[1], "wb").write(out)
EOF
chmod 644 "$OUT"/* "$PCRSIG"/*
ls -l "$OUT" "$PCRSIG"
