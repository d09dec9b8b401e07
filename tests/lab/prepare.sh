#!/usr/bin/env bash
# Builds the Xen test lab cache in .lab/ (gitignored):
#   .lab/debs/                      downloaded Debian packages
#   .lab/root/                      all packages unpacked with dpkg -x
#   .lab/xen                        Xen 4.17 built from Debian's source with shadow paging (multiboot image)
#   .lab/vmlinuz                    Debian Linux kernel (dom0, and reference PV domU)
#   .lab/dom0-base.cpio             dom0 initramfs (busybox + xl toolstack + modules + /init)
#   .lab/linux-guest-initrd.cpio.gz busybox initrd for the reference Linux PV domU
# Re-running reuses finished steps (stamp files in .lab/stamps). Details go to .lab/prepare.log.
# Environment: LAB_DIR (default <repo>/.lab), LAB_FORCE=1 rebuilds everything after the download.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
LAB=${LAB_DIR:-$REPO/.lab}
HERE=$REPO/tests/lab
LOG=$LAB/prepare.log
LN=${LAB#"$REPO"/}
ST=$LAB/stamps
PKGS=(xen-hypervisor-4.17-amd64 xen-utils-4.17 xenstore-utils linux-image-amd64 busybox-static)
# Image stamps carry a hash of the scripts that shape them, so edits rebuild the images.
BASE_VERSION=$(cat "$HERE/prepare.sh" "$HERE/dom0-init.sh" | md5sum | cut -c1-12)
GUEST_VERSION=$(cat "$HERE/prepare.sh" "$HERE/linux-guest-init.sh" | md5sum | cut -c1-12)

mkdir -p "$LAB" "$ST"
: >"$LOG"
T0=$(date +%s)

step() { printf 'lab: %s\n' "$*"; printf '\n== %s\n' "$*" >>"$LOG"; }
die() { printf 'lab: ERROR: %s (log: %s)\n' "$*" "$LOG" >&2; tail -n 15 "$LOG" >&2 || true; exit 1; }
q() { "$@" >>"$LOG" 2>&1 || die "command failed: $*"; }
done_p() { [[ -z ${LAB_FORCE:-} && -f $ST/$1 ]]; }
mark() { touch "$ST/$1"; }

for tool in apt-get dpkg dpkg-deb cpio gzip zcat ldd python3; do
    command -v "$tool" >/dev/null || die "missing host tool '$tool' (run tests/lab/deps.sh)"
done

# ---------------------------------------------------------------- 1. download
DEBS=$LAB/debs
have_deb() { compgen -G "$DEBS/${1}_*.deb" >/dev/null; }
download() {
    apt-get install --download-only --no-install-recommends -y -q \
        -o Dir::Cache::archives="$DEBS/" "${PKGS[@]}" >>"$LOG" 2>&1
}
if ! done_p debs; then
    step "downloading Xen 4.17, Linux and busybox packages"
    mkdir -p "$DEBS/partial"
    if ! download; then
        echo "retrying after apt-get update" >>"$LOG"
        q apt-get update -q
        q download
    fi
    # --download-only skips packages already installed on this host: fetch those directly.
    kver_pkg=$(apt-cache depends linux-image-amd64 2>>"$LOG" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n $kver_pkg ]] || die "cannot resolve the kernel package behind linux-image-amd64"
    for p in xen-hypervisor-4.17-amd64 xen-utils-4.17 xenstore-utils busybox-static "$kver_pkg"; do
        if ! have_deb "$p"; then
            echo "fetching $p directly (installed on host)" >>"$LOG"
            (cd "$DEBS" && q apt-get download -q "$p")
        fi
    done
    rm -f "$DEBS/lock"
    mark debs
fi

# ---------------------------------------------------------------- 2. unpack
R=$LAB/root
if ! done_p unpack; then
    step "unpacking $(ls "$DEBS"/*.deb | wc -l) packages into $LN/root"
    rm -rf "$R"; mkdir -p "$R"
    for d in "$DEBS"/*.deb; do q dpkg -x "$d" "$R"; done
    mark unpack
fi

# ---------------------------------------------------------------- 3. xen + kernel
if ! done_p kernels; then
    step "extracting hypervisor and kernel"
    vml=$(ls "$R"/boot/vmlinuz-* | sort -V | tail -n1)
    [[ -f $vml ]] || die "kernel missing in .lab/root/boot"
    cp "$vml" "$LAB/vmlinuz"
    basename "$vml" | sed 's/^vmlinuz-//' >"$LAB/kernel-release"
    echo "kernel=$vml" >>"$LOG"
    mark kernels
fi

# ---------------------------------------------------------------- 3a. hypervisor with shadow paging
# Debian's binary hypervisor lacks CONFIG_SHADOW_PAGING, so PV live migration cannot work with it:
# the lab boots Xen built from Debian's source with that one option on (tests/lab/build-xen.sh).
XEN_VERSION=$(md5sum <"$HERE/build-xen.sh" | cut -c1-12)
if ! done_p "xen-shadow.v$XEN_VERSION" || [[ ! -s $LAB/xen ]]; then
    step "building the hypervisor from Debian's Xen 4.17 source with CONFIG_SHADOW_PAGING=y (~2 min)"
    cfg=$(ls "$R"/boot/xen-4.17*.config | sort -V | tail -n1)
    [[ -f $cfg ]] || die "Debian's hypervisor config missing in .lab/root/boot"
    "$HERE/build-xen.sh" "$LAB" "$cfg" "$LAB/xen" >>"$LOG" 2>&1 || die "building the hypervisor failed"
    grep 'build-xen: built' "$LOG" | tail -n1 | sed 's/^build-xen: /lab: /'
    rm -f "$ST"/xen-shadow.v*; mark "xen-shadow.v$XEN_VERSION"
fi
KREL=$(cat "$LAB/kernel-release")
MODDIR=$R/lib/modules/$KREL

# ---------------------------------------------------------------- 3b. guest kernel as plain ELF
# libxenguest decompresses a bzImage's xz payload inside dom0, which under TCG costs ~7 s per
# `xl create`; the reference guest therefore gets the extracted, stripped ELF vmlinux.
if ! done_p guest-kernel; then
    step "extracting the reference guest's ELF kernel $LN/linux-guest-kernel"
    python3 - "$LAB/vmlinuz" "$LAB/linux-guest-kernel.tmp" >>"$LOG" 2>&1 <<'PY' || die "cannot extract vmlinux from the bzImage"
import gzip, lzma, sys, zlib
data = open(sys.argv[1], "rb").read()
for magic, dec in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
                   (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(31).decompress(b))):
    at = data.find(magic)
    while at >= 0:
        try:
            out = dec(data[at:])
            if out[:4] == b"\x7fELF":
                open(sys.argv[2], "wb").write(out)
                print("vmlinux: %d bytes from offset %d" % (len(out), at))
                sys.exit(0)
        except Exception:
            pass
        at = data.find(magic, at + 1)
sys.exit("no compressed ELF payload found")
PY
    if command -v strip >/dev/null; then strip --strip-all "$LAB/linux-guest-kernel.tmp" >>"$LOG" 2>&1 || true; fi
    mv "$LAB/linux-guest-kernel.tmp" "$LAB/linux-guest-kernel"
    mark guest-kernel
fi

# ---------------------------------------------------------------- helpers for images
LIBPATH=$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu:$R/usr/lib/xen-4.17/lib:$R/usr/lib
# copy_lib FILE STAGE: copies a resolved library (dereferenced) to STAGE/lib/x86_64-linux-gnu/<name>
copy_lib() {
    local dst=$2/lib/x86_64-linux-gnu/$(basename "$1")
    [[ -e $dst ]] || cp -L "$1" "$dst"
}
# find_lib NAME: path of a library, unpacked tree first, then the host
find_lib() {
    local d
    for d in $R/usr/lib/x86_64-linux-gnu $R/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
        [[ -e $d/$1 ]] && { echo "$d/$1"; return 0; }
    done
    return 1
}
# add_bin SRC STAGE DEST: installs a dynamically linked binary and every library ldd lists for it
add_bin() {
    local src=$1 stage=$2 dest=$3 line lib
    mkdir -p "$stage/$(dirname "$dest")" "$stage/lib/x86_64-linux-gnu" "$stage/lib64"
    cp -L "$src" "$stage/$dest"
    local out
    out=$(LD_LIBRARY_PATH=$LIBPATH ldd "$src" 2>&1) || die "ldd failed on $src: $out"
    echo "ldd $dest:" >>"$LOG"; echo "$out" >>"$LOG"
    if grep -q 'not found' <<<"$out"; then die "unresolved library for $src"; fi
    while read -r line; do
        lib=
        case $line in
            *'=> /'*) lib=${line#*=> }; lib=${lib%% (*} ;;
            /*ld-linux*) lib=${line%% (*} ;;
        esac
        [[ -n $lib ]] || continue
        case $lib in
            */ld-linux-x86-64.so.2) [[ -e $stage/lib64/ld-linux-x86-64.so.2 ]] || cp -L "$lib" "$stage/lib64/ld-linux-x86-64.so.2" ;;
            *) copy_lib "$lib" "$stage" ;;
        esac
    done <<<"$out"
}
add_busybox() {
    local stage=$1 a
    mkdir -p "$stage/bin" "$stage/sbin" "$stage/usr/bin" "$stage/usr/sbin"
    cp "$R/bin/busybox" "$stage/bin/busybox"
    for a in $("$R/bin/busybox" --list-full); do
        [[ $a == bin/busybox ]] && continue
        [[ -e $stage/$a || -L $stage/$a ]] || ln -s /bin/busybox "$stage/$a"
    done
}
mkcpio() { # STAGE OUT
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$2.tmp"
    mv "$2.tmp" "$2"
}
# add_module NAME STAGE: finds NAME.ko[.xz|.zst|.gz] under the module tree, installs plain NAME.ko
add_module() {
    local f
    f=$(find "$MODDIR" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" -o -name "$1.ko.gz" | head -n1)
    [[ -n $f ]] || die "kernel module $1 not found in $MODDIR"
    local dst=$2/lib/modules/$1.ko
    case $f in
        *.ko) cp "$f" "$dst" ;;
        *.xz) xz -dc "$f" >"$dst" ;;
        *.zst) zstd -dcq "$f" >"$dst" ;;
        *.gz) gzip -dc "$f" >"$dst" ;;
    esac
}

# ---------------------------------------------------------------- 4. dom0 initramfs
XENBIN=usr/lib/xen-4.17/bin
XEN_MODULES=(xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc)
VIRTIO_MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk)
# Backends for guests' PV disks and networks, in load order (no modules.dep in the initramfs):
# loop holds disk images, bridge needs llc then stp.
PV_MODULES=(loop llc stp bridge xen-blkback xen-netback)
if ! done_p "dom0-base.v$BASE_VERSION"; then
    step "building dom0 initramfs $LN/dom0-base.cpio"
    S=$LAB/dom0-stage
    rm -rf "$S"; mkdir -p "$S"
    add_busybox "$S"
    for b in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
        [[ -e $R/$XENBIN/$b ]] || die "$b missing from xen-utils-4.17"
        add_bin "$R/$XENBIN/$b" "$S" "$XENBIN/$b"
    done
    for b in xl xenstored xenconsoled xen-init-dom0; do ln -sf "/$XENBIN/$b" "$S/usr/sbin/$b"; done
    for b in xenstore-read xenstore-write xenstore-ls xenstore-rm xenstore-watch xenstore-exists xenstore-list xenstore-chmod; do
        src=$R/usr/bin/$b
        [[ -e $src ]] || die "$b missing"
        rm -f "$S/usr/bin/$b"   # a busybox applet of the same name must not shadow it
        add_bin "$src" "$S" "usr/bin/$b"
    done
    gcc_s=$(find_lib libgcc_s.so.1) || die "libgcc_s.so.1 not found (install libgcc-s1)"
    copy_lib "$gcc_s" "$S"
    mkdir -p "$S/lib/modules"
    for m in "${XEN_MODULES[@]}" "${VIRTIO_MODULES[@]}" "${PV_MODULES[@]}"; do add_module "$m" "$S"; done
    printf '%s\n' "${XEN_MODULES[@]}" >"$S/lib/modules/xen.list"
    printf '%s\n' "${VIRTIO_MODULES[@]}" >"$S/lib/modules/virtio.list"
    printf '%s\n' "${PV_MODULES[@]}" >"$S/lib/modules/pv.list"
    mkdir -p "$S"/{proc,sys,dev,run,tmp,disks,root,lab,etc/xen,var/lib/xen,var/log/xen/console,var/lib/xenstored}
    ln -s ../run "$S/var/run"; ln -s ../run "$S/var/lock" 2>/dev/null || true
    printf 'autoballoon="off"\n' >"$S/etc/xen/xl.conf"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$S/etc/passwd"
    printf 'root:x:0:\n' >"$S/etc/group"
    printf '/lib/x86_64-linux-gnu\n' >"$S/etc/ld.so.conf"
    ldconfig -r "$S" >>"$LOG" 2>&1 || true
    install -m 0755 "$HERE/dom0-init.sh" "$S/init"
    mkcpio "$S" "$LAB/dom0-base.cpio"
    rm -rf "$S"
    rm -f "$ST"/dom0-base.v*; mark "dom0-base.v$BASE_VERSION"
fi

# ---------------------------------------------------------------- 5. linux PV guest initrd
# The guest's PV frontends (its /init loads them): the lab's disks and vifs need them.
GUEST_MODULES=(xen-blkfront xen-netfront)
if ! done_p "linux-guest.v$GUEST_VERSION"; then
    step "building reference Linux PV guest initrd $LN/linux-guest-initrd.cpio.gz"
    G=$LAB/guest-stage
    rm -rf "$G"; mkdir -p "$G"/{proc,sys,dev,tmp,root,etc,lib/modules}
    add_busybox "$G"
    for m in "${GUEST_MODULES[@]}"; do add_module "$m" "$G"; done
    install -m 0755 "$HERE/linux-guest-init.sh" "$G/init"
    mkcpio "$G" "$LAB/linux-guest-initrd.cpio"
    gzip -9nf "$LAB/linux-guest-initrd.cpio"
    rm -rf "$G"
    rm -f "$ST"/linux-guest.v*; mark "linux-guest.v$GUEST_VERSION"
fi

step "ready in $(( $(date +%s) - T0 )) s: xen $(cat "$LAB/xen-version" 2>/dev/null) (shadow paging), vmlinuz ($KREL), dom0-base.cpio ($(du -h "$LAB/dom0-base.cpio" | cut -f1)), linux-guest-initrd.cpio.gz"
