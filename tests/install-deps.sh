#!/usr/bin/env bash
# Install the Debian packages that building Wardbox and running every test tier needs.
# Idempotent. Run it as root; from another account it re-runs itself through sudo (a root shell
# on a fresh Debian machine has no sudo, so the README's commands never start with it).
# Needs only Debian's package mirror.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: needs root, and sudo is not installed; run it as root" >&2; exit 1; }
    exec sudo env "PATH=$PATH" "$0" "$@"
fi

packages=(
    # build
    build-essential pkg-config cmake clang libclang-dev libssl-dev
    # TPM (tss-esapi) and LUKS2 (libcryptsetup-rs), and the software TPM the tests start
    libtss2-dev libtss2-tcti-swtpm0 libtss2-tcti-device0 swtpm swtpm-tools tpm2-tools
    libcryptsetup-dev cryptsetup-bin
    # firewall tests: nftables in network namespaces, real traffic
    nftables iproute2 netcat-openbsd iputils-ping
    # python for the test-model fetch and the ollama client compatibility test
    python3 python3-pip python3-venv
)
# Extra packages a subsystem's tests need are listed, one per line, in tests/deps.d/*.list.
if compgen -G "$(dirname "$0")/deps.d/*.list" >/dev/null; then
    while read -r p; do
        [ -n "$p" ] && [ "${p#\#}" = "$p" ] && packages+=("$p")
    done < <(cat "$(dirname "$0")"/deps.d/*.list)
fi

# QEMU's packages must come from one release. A build machine may ship a newer qemu-utils (from
# backports) while the mirror offers qemu-system-x86 from the stable release; apt then resolves
# qemu-system-common's "Breaks" by REMOVING qemu-utils, and the image tier finds no qemu-img.
# So the whole QEMU set is pinned to the version of qemu-system-x86 the mirror offers (a
# downgrade of qemu-utils where needed), and judged by version, not by presence.
qemu_set=(qemu-system-x86 qemu-utils)

installed_version() { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | awk '$3 == "installed" {print $4}'; }

missing=()
for p in "${packages[@]}"; do
    [ -n "$(installed_version "$p")" ] || missing+=("$p")
done
export DEBIAN_FRONTEND=noninteractive
updated=0
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    updated=1
fi
qemu_candidate() { apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}'; }
qemu_version=$(qemu_candidate)
if { [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; } && [ "$updated" = 0 ]; then
    apt-get update -qq   # no package lists yet
    updated=1
    qemu_version=$(qemu_candidate)
fi
if [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; then
    echo "install-deps: the package mirror offers no qemu-system-x86" >&2
    exit 1
fi
for q in "${qemu_set[@]}"; do
    [ "$(installed_version "$q")" = "$qemu_version" ] && continue
    kept=()
    for p in "${missing[@]}"; do [ "$p" = "$q" ] || kept+=("$p"); done
    missing=("${kept[@]}" "$q=$qemu_version")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    [ "$updated" = 1 ] || apt-get update -qq
    apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}"
else
    echo "install-deps: all ${#packages[@]} packages present (QEMU $qemu_version)"
fi

# virt-fw-vars (PyPI virt-firmware; bookworm has no package): image/uefi.sh enrols Secure Boot
# keys into OVMF's variable store with it. Its own venv, pinned, linked onto the PATH.
VIRT_FIRMWARE_VERSION=26.10
virt_venv=/opt/wardbox-tools/virt-firmware
if ! "$virt_venv/bin/pip" show virt-firmware 2>/dev/null | grep -qx "Version: $VIRT_FIRMWARE_VERSION"; then
    echo "install-deps: installing virt-firmware $VIRT_FIRMWARE_VERSION in $virt_venv"
    /usr/bin/python3 -m venv "$virt_venv"
    "$virt_venv/bin/pip" install -q "virt-firmware==$VIRT_FIRMWARE_VERSION"
fi
ln -sf "$virt_venv/bin/virt-fw-vars" /usr/local/bin/virt-fw-vars

# aiosmtpd (PyPI): the smtp_ tests' mail relay, requiring STARTTLS. Its own venv, pinned, linked
# onto the PATH.
AIOSMTPD_VERSION=1.4.6
smtpd_venv=/opt/wardbox-tools/aiosmtpd
if ! "$smtpd_venv/bin/pip" show aiosmtpd 2>/dev/null | grep -qx "Version: $AIOSMTPD_VERSION"; then
    echo "install-deps: installing aiosmtpd $AIOSMTPD_VERSION in $smtpd_venv"
    /usr/bin/python3 -m venv "$smtpd_venv"
    "$smtpd_venv/bin/pip" install -q "aiosmtpd==$AIOSMTPD_VERSION"
fi
ln -sf "$smtpd_venv/bin/aiosmtpd" /usr/local/bin/aiosmtpd

# Every program a tier runs must be on the PATH now; a package that apt removed or that no
# longer ships the program is named here, not discovered forty minutes into CI.
programs=(
    cc pkg-config cmake clang            # build
    swtpm swtpm_setup tpm2_pcrread       # TPM tiers
    cryptsetup                           # LUKS2 tier
    nft ip nc ping                       # firewall tier
    python3 unzip                        # model fetch
    slapd ldapadd chromium chromedriver  # web tiers
    rsyslogd aiosmtpd                    # alert delivery tiers
    mkosi debootstrap systemd-nspawn mkfs.ext4 sfdisk bc curl   # image build
    qemu-img qemu-system-x86_64          # image boots
    objcopy sbsign sbverify mkfs.vfat mmd mcopy virt-fw-vars busybox   # UEFI boot chain
    restic rclone                        # backup tests: the stock tool checks our repositories; a REST server
)
absent=()
for prog in "${programs[@]}"; do
    command -v "$prog" >/dev/null || absent+=("$prog")
done
for f in /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_ossl.so /usr/share/OVMF/OVMF_CODE_4M.ms.fd /usr/share/OVMF/OVMF_VARS_4M.ms.fd /usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd \
        /usr/share/OVMF/OVMF_CODE_4M.secboot.fd /usr/share/OVMF/OVMF_VARS_4M.fd \
        /usr/lib/systemd/boot/efi/linuxx64.efi.stub /usr/lib/systemd/boot/efi/systemd-bootx64.efi \
        /usr/lib/systemd/systemd-measure; do
    [ -e "$f" ] || absent+=("$f")
done
if [ ${#absent[@]} -gt 0 ]; then
    echo "install-deps: installed, but these are still missing: ${absent[*]}" >&2
    exit 1
fi
command -v cargo >/dev/null || { echo "install-deps: cargo (Rust 1.90+) is required and not installed" >&2; exit 1; }
# The fuzz tier (tests/fuzz.sh) runs libFuzzer through cargo-fuzz, built from crates.io.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "install-deps: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install -q cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "install-deps: every program the test tiers run is present"
