#!/usr/bin/env bash
# Builds the lab's hypervisor from Debian's own Xen 4.17 source with one change,
# CONFIG_SHADOW_PAGING=y: PV log-dirty (live `xl migrate`) needs shadow paging and
# Debian's binary hypervisor is built without it.
#   build-xen.sh LAB_DIR DEBIAN_CONFIG OUT
# LAB_DIR/xen-src holds the apt state, the source packages and the build tree; OUT is
# the multiboot image QEMU boots. Fails loudly (exit != 0) on any error: the lab must
# not fall back to a hypervisor that cannot migrate.
set -euo pipefail

LAB=$(cd "$1" && pwd) DEBCONFIG=$2 OUT=$3
W=$LAB/xen-src
mkdir -p "$W/apt/lists/partial" "$W/apt/cache/archives/partial" "$W/dl"

# The deb-src lines use the mirrors this machine already uses for its binary packages.
mirrors() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f"
    done
    [[ -f /etc/apt/sources.list ]] && awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^(https?|ftp):/) {print $i; break}}' /etc/apt/sources.list
    return 0
}
mapfile -t URIS < <(mirrors | sort -u)

((${#URIS[@]})) || { echo "build-xen: no Debian mirror found in the apt configuration" >&2; exit 1; }
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SIGNED=; [[ -f $KEYRING ]] && SIGNED="[signed-by=$KEYRING] "
: >"$W/apt/sources.list"
# bookworm's main suite (the security archive serves no sources here); its 4.17.5 hypervisor
# runs the 4.17.7 toolstack unchanged.
for u in "${URIS[@]}"; do
    case $u in *security*) continue ;; esac
    echo "deb-src ${SIGNED}$u bookworm main" >>"$W/apt/sources.list"
done
[[ -s $W/apt/sources.list ]] || { echo "build-xen: only security mirrors configured" >&2; exit 1; }
APT=(-o Dir::Etc::sourcelist="$W/apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
     -o Dir::State::Lists="$W/apt/lists" -o Dir::Cache="$W/apt/cache" -q)

if ! compgen -G "$W/dl/xen_4.17*.orig.tar.*" >/dev/null; then
    echo "build-xen: fetching Debian's xen source package ($(wc -l <"$W/apt/sources.list") deb-src lines)"
    apt-get "${APT[@]}" update
    (cd "$W/dl" && apt-get "${APT[@]}" source --download-only xen)
fi
orig=$(ls "$W"/dl/xen_4.17*.orig.tar.* | sort -V | tail -n1)
deb=$(ls "$W"/dl/xen_4.17*.debian.tar.* | sort -V | tail -n1)
version=$(basename "$orig" | sed -E 's/^xen_(.*)\.orig\.tar\..*$/\1/')
echo "build-xen: Xen $version from $(basename "$orig") + $(basename "$deb")"

T=$W/tree
rm -rf "$T"; mkdir -p "$T"
tar -xf "$orig" -C "$T" --strip-components=1
tar -xf "$deb" -C "$T"
n=0
while read -r p; do
    p=${p%%#*}; p=${p// /}
    [[ -n $p ]] || continue
    patch -d "$T" -p1 -s --no-backup-if-mismatch <"$T/debian/patches/$p"
    n=$((n + 1))
done <"$T/debian/patches/series"
echo "build-xen: applied $n Debian patches"

cp "$DEBCONFIG" "$T/xen/.config"
if grep -q '^# CONFIG_SHADOW_PAGING is not set' "$T/xen/.config"; then
    sed -i 's/^# CONFIG_SHADOW_PAGING is not set/CONFIG_SHADOW_PAGING=y/' "$T/xen/.config"
else
    echo 'CONFIG_SHADOW_PAGING=y' >>"$T/xen/.config"
fi
make -C "$T/xen" olddefconfig >/dev/null
grep -qx 'CONFIG_SHADOW_PAGING=y' "$T/xen/.config" || { echo "build-xen: CONFIG_SHADOW_PAGING did not stick" >&2; exit 1; }
t0=$(date +%s)
make -C "$T/xen" -j"$(nproc)" >"$W/build.log" 2>&1 || { tail -n 30 "$W/build.log" >&2; echo "build-xen: build failed (log $W/build.log)" >&2; exit 1; }
[[ -s $T/xen/xen ]] || { echo "build-xen: no xen/xen after the build" >&2; exit 1; }
cp "$T/xen/xen" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "$version" >"$LAB/xen-version"
echo "build-xen: built $OUT (Xen $version, CONFIG_SHADOW_PAGING=y) in $(($(date +%s) - t0)) s"
rm -rf "$T"
