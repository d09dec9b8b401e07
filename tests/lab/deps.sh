#!/usr/bin/env bash
# Installs what the build and the lab need, only when missing:
#   host tools (qemu-system-x86_64, cpio, python3, ...) via apt-get, the Rust target via rustup.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null && SUDO="sudo -n" || { echo "deps: not root and no sudo" >&2; exit 1; }
fi

# command -> Debian package
declare -A NEED=(
    [qemu-system-x86_64]=qemu-system-x86
    [cpio]=cpio
    [python3]=python3
    [gzip]=gzip
    [xz]=xz-utils
    [zstd]=zstd
    [ldd]=libc-bin
    [ldconfig]=libc-bin
    [apt-cache]=apt
    # the lab's hypervisor is built from Debian's source (tests/lab/build-xen.sh)
    [flex]=flex
    [bison]=bison
    [make]=make
    [gcc]=gcc
    [patch]=patch
    [strip]=binutils
)
missing=()
for cmd in "${!NEED[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# seabios/ipxe ROMs come as recommends of qemu-system-x86 in some setups; QEMU needs the BIOS.
[[ -e /usr/share/seabios/bios-256k.bin || -e /usr/share/qemu/bios-256k.bin ]] || missing+=(seabios)
[[ -e /usr/lib/ipxe/qemu/efi-e1000.rom || -e /usr/share/qemu/efi-e1000.rom ]] || missing+=(ipxe-qemu)
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null || { echo "deps: cargo not found (install rustup)" >&2; exit 1; }
if command -v rustup >/dev/null 2>&1; then
    # The kernel's target, and musl for ballastd (a static dom0 binary).
    for t in x86_64-unknown-none x86_64-unknown-linux-musl; do
        if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
            echo "deps: rustup target add $t"
            rustup target add "$t"
        fi
    done
    for c in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
            echo "deps: rustup component add $c"
            rustup component add "$c"
        fi
    done
else
    echo "deps: rustup not found; assuming the toolchain already has x86_64-unknown-none" >&2
fi
echo "deps: ok"
