#!/usr/bin/env bash
# Install the Debian packages that building Wardbox and running every test tier needs.
# Idempotent; run as root (or through sudo). Needs only Debian's package mirror.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: run as root (sudo $0)" >&2
    exit 1
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

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "install-deps: all ${#packages[@]} packages present"
fi
command -v cargo >/dev/null || { echo "install-deps: cargo (Rust 1.90+) is required and not installed" >&2; exit 1; }
