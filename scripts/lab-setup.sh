#!/usr/bin/env bash
# lab-setup.sh - set up the migproxy "QEMU lab": four real QEMU versions and a
# bare-metal AArch64 witness guest, described in $LAB_DIR/lab.json for the
# Python harness (migproxy/lab).
#
#   7.2.x    bookworm main            apt-get download + dpkg -x  -> $LAB_DIR/qemu-7.2
#   10.0.2   bookworm-backports       installed natively on the host
#   11.1.x   trixie-backports         installed in a trixie root   ($LAB_DIR/trixie)
#   10.0.13  trixie main              dpkg -x inside the trixie root (/opt/qemu-10.0.13)
#
# Usage (as root):   scripts/lab-setup.sh            set up / repair; fast when done
#                    scripts/lab-setup.sh --mount    only (re)do the chroot bind mounts
#                    scripts/lab-setup.sh --unmount  remove the chroot bind mounts
#                    scripts/lab-setup.sh --purge    unmount and delete $LAB_DIR
# Environment:       LAB_DIR (default /var/cache/migproxy-lab)
#
# Files the tests create (QMP sockets, serial logs, streams) live under
# $LAB_DIR/work, which is bind-mounted at the same path inside the trixie root,
# so one path works for host and chrooted QEMUs alike.  The guest image is
# copied to the same path inside the root.
#
# The Debian mirror is never written down here: it is read at run time from the
# machine's own apt sources (the entry serving suite "bookworm").
set -euo pipefail

LAB_DIR=${LAB_DIR:-/var/cache/migproxy-lab}
LAB_DIR=${LAB_DIR%/}
ROOT=$LAB_DIR/trixie
WORK=$LAB_DIR/work
Q72=$LAB_DIR/qemu-7.2
Q10_IN_ROOT=/opt/qemu-10.0.13
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_SRC=$SCRIPT_DIR/../tests/guest/tick.S
# shellcheck source=lib/debian-sources.sh
source "$SCRIPT_DIR/lib/debian-sources.sh"
BACKPORTS_SOURCES=/etc/apt/sources.list.d/migproxy-lab-bookworm-backports.sources

# Expected QEMU versions (extended regexes matched against "X.Y.Z").
EXPECT_72='7\.2\.[0-9]+'
EXPECT_HOST='10\.0\.2'
EXPECT_T10='10\.0\.13'
EXPECT_T11='11\.1\.[0-9]+'

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q --no-install-recommends -o Dpkg::Use-Pty=0)
T0=$(date +%s)

log() { printf '[lab-setup %3ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'lab-setup: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

# The URI of the apt source entry that serves suite "bookworm" (deb822 file).
mirror_uri() { source_uri bookworm || die "cannot tell the Debian mirror"; }

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update (host)"
        apt-get update -q -o Dpkg::Use-Pty=0 >/dev/null
        APT_UPDATED=1
    fi
}

pkg_installed() {   # pkg [root]
    local root=${2:-}
    # shellcheck disable=SC2016  # dpkg-query's own ${Status} format
    local -a cmd=(dpkg-query -W -f '${Status}' "$1")
    [[ -n $root ]] && cmd=(chroot "$root" "${cmd[@]}")
    [[ $("${cmd[@]}" 2>/dev/null) == "install ok installed" ]]
}

in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

# "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)" -> 10.0.2
qemu_version_of() { sed -n 's/^QEMU emulator version \([0-9][0-9.]*\).*/\1/p' <<<"$1" | head -n1; }

# Highest version of package $1 whose upstream part matches $2 (ERE), from
# `apt-cache madison` output on stdin.
pick_version() {
    local want=$1 best="" v
    while read -r v; do
        [[ ${v#*:} =~ ^$want ]] || continue
        if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
    done < <(awk -F'|' '{gsub(/ /, "", $2); print $2}')
    echo "$best"
}

# Library packages a .deb depends on (first alternative, qemu-* dropped), read
# from the Depends field given on stdin.
deb_lib_deps() {
    tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g' \
        | grep -v -e '^$' -e '^qemu-' | sort -u
}

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

mounts_under_root() {   # mount points below $ROOT, deepest first
    awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts \
        | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

unmount_root() {
    [[ -d $ROOT ]] || return 0
    local m
    for m in $(mounts_under_root); do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    [[ -z $(mounts_under_root) ]] || die "could not unmount everything below $ROOT"
}

ensure_mounts() {
    mkdir -p "$WORK" "$ROOT$WORK" "$ROOT/proc" "$ROOT/dev"
    is_mounted "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    is_mounted "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
    mkdir -p "$ROOT/dev/pts"
    if is_mounted /dev/pts && ! is_mounted "$ROOT/dev/pts"; then
        mount --bind /dev/pts "$ROOT/dev/pts"
    fi
    is_mounted "$ROOT$WORK" || mount --bind "$WORK" "$ROOT$WORK"
    # Writable and sticky for whoever runs the tests.
    chmod 1777 "$WORK"
}

remove_tree() {   # only ever below $LAB_DIR, never through a mount
    [[ $1 == "$LAB_DIR"/* || $1 == "$LAB_DIR" ]] || die "refusing to delete $1"
    rm -rf --one-file-system -- "$1"
}

# ---------------------------------------------------------------- steps

step_host_packages() {
    local mirror want_sources need=()
    mirror=$(mirror_uri)
    want_sources="# Written by migproxy scripts/lab-setup.sh (QEMU lab)
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    if [[ ! -f $BACKPORTS_SOURCES || $(cat "$BACKPORTS_SOURCES") != "$want_sources" ]]; then
        log "adding bookworm-backports apt source"
        printf '%s\n' "$want_sources" > "$BACKPORTS_SOURCES"
        APT_UPDATED=0
        apt_update_once
    fi
    local p
    for p in debootstrap binutils-aarch64-linux-gnu curl xz-utils; do
        pkg_installed "$p" || need+=("$p")
    done
    if ((${#need[@]})); then
        apt_update_once
        log "apt-get install ${need[*]}"
        apt-get install "${APT_OPTS[@]}" "${need[@]}" >/dev/null
    fi
    local v=""
    if [[ -x /usr/bin/qemu-system-aarch64 ]]; then
        v=$(qemu_version_of "$(/usr/bin/qemu-system-aarch64 --version 2>/dev/null || true)")
    fi
    if [[ ! $v =~ ^$EXPECT_HOST$ ]]; then
        apt_update_once
        log "apt-get install -t bookworm-backports qemu-system-arm (host has '${v:-none}')"
        apt-get install "${APT_OPTS[@]}" -t bookworm-backports qemu-system-arm >/dev/null
    fi
}

step_qemu72() {
    if [[ -f $Q72/.lab-ok && -x $Q72/usr/bin/qemu-system-aarch64 ]]; then
        return 0
    fi
    apt_update_once
    log "fetching QEMU 7.2 (bookworm main) into $Q72"
    local tmp ver pkg deps=() missing=() d
    tmp=$(mktemp -d "$LAB_DIR/.dl72.XXXXXX")
    chown _apt "$tmp" 2>/dev/null || true
    for pkg in qemu-system-arm qemu-system-common qemu-system-data; do
        ver=$(apt-cache madison "$pkg" | pick_version '7\.2')
        [[ -n $ver ]] || die "no 7.2 version of $pkg in the apt sources"
        (cd "$tmp" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) \
            || die "apt-get download $pkg=$ver failed"
    done
    remove_tree "$Q72.tmp"
    mkdir -p "$Q72.tmp"
    for d in "$tmp"/*.deb; do
        dpkg -x "$d" "$Q72.tmp"
        mapfile -t -O "${#deps[@]}" deps < <(dpkg-deb -f "$d" Depends | deb_lib_deps)
    done
    dpkg-deb -f "$tmp"/qemu-system-arm_*.deb Version > "$Q72.tmp/.lab-package-version"
    remove_tree "$tmp"
    for d in $(printf '%s\n' "${deps[@]}" | sort -u); do
        pkg_installed "$d" || missing+=("$d")
    done
    if ((${#missing[@]})); then
        log "apt-get install libraries for 7.2: ${missing[*]}"
        apt-get install "${APT_OPTS[@]}" "${missing[@]}" >/dev/null
    fi
    if ldd "$Q72.tmp/usr/bin/qemu-system-aarch64" | grep -q 'not found'; then
        ldd "$Q72.tmp/usr/bin/qemu-system-aarch64" | grep 'not found' >&2
        die "QEMU 7.2 misses shared libraries"
    fi
    remove_tree "$Q72"
    mv "$Q72.tmp" "$Q72"
    touch "$Q72/.lab-ok"
}

step_trixie_root() {
    if [[ ! -f $ROOT/.lab-debootstrap-ok ]]; then
        local mirror
        mirror=$(mirror_uri)
        unmount_root
        remove_tree "$ROOT"
        log "debootstrap --variant=minbase trixie $ROOT"
        debootstrap --variant=minbase trixie "$ROOT" "$mirror" > "$LAB_DIR/debootstrap.log" 2>&1 \
            || { tail -n 30 "$LAB_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
        # No services inside the root.
        printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
        chmod 755 "$ROOT/usr/sbin/policy-rc.d"
        : > "$ROOT/etc/apt/sources.list"
        cat > "$ROOT/etc/apt/sources.list.d/lab.sources" <<EOF
# Written by migproxy scripts/lab-setup.sh (QEMU lab)
Types: deb
URIs: $mirror
Suites: trixie trixie-backports
Components: main
EOF
        touch "$ROOT/.lab-debootstrap-ok"
    fi
    ensure_mounts
}

ROOT_APT_UPDATED=0
root_apt_update_once() {
    if [[ $ROOT_APT_UPDATED == 0 ]]; then
        cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
        log "apt-get update (trixie root)"
        in_root apt-get update -q >/dev/null
        ROOT_APT_UPDATED=1
    fi
}

step_trixie_qemu11() {
    local v
    v=$(qemu_version_of "$(in_root /usr/bin/qemu-system-aarch64 --version 2>/dev/null || true)")
    [[ $v =~ ^$EXPECT_T11$ ]] && return 0
    root_apt_update_once
    log "trixie root: apt-get install -t trixie-backports qemu-system-arm (has '${v:-none}')"
    in_root apt-get install "${APT_OPTS[@]}" -t trixie-backports qemu-system-arm >/dev/null
}

step_trixie_qemu10() {
    local dest=$ROOT$Q10_IN_ROOT
    if [[ -f $dest/.lab-ok && -x $dest/usr/bin/qemu-system-aarch64 ]]; then
        return 0
    fi
    root_apt_update_once
    log "trixie root: fetching QEMU 10.0 (trixie main) into $Q10_IN_ROOT"
    local pkg ver deps=() missing=() d tmp=/tmp/lab-dl10
    rm -rf "${ROOT:?}$tmp"
    mkdir -p "$ROOT$tmp"
    chroot "$ROOT" chown _apt "$tmp" 2>/dev/null || true
    for pkg in qemu-system-arm qemu-system-common qemu-system-data; do
        ver=$(in_root apt-cache madison "$pkg" | grep -v -- '-backports' \
            | pick_version "$EXPECT_T10")
        [[ -n $ver ]] || die "no version matching $EXPECT_T10 of $pkg in trixie"
        in_root sh -c "cd $tmp && apt-get download -q '$pkg=$ver'" >/dev/null 2>&1 \
            || die "apt-get download $pkg=$ver failed in the trixie root"
    done
    rm -rf "${dest:?}.tmp"
    mkdir -p "$dest.tmp"
    for d in "$ROOT$tmp"/*.deb; do
        in_root dpkg -x "${d#"$ROOT"}" "$Q10_IN_ROOT.tmp"
        mapfile -t -O "${#deps[@]}" deps < <(in_root dpkg-deb -f "${d#"$ROOT"}" Depends \
            | deb_lib_deps)
    done
    in_root sh -c "dpkg-deb -f $tmp/qemu-system-arm_*.deb Version" \
        > "$dest.tmp/.lab-package-version"
    rm -rf "${ROOT:?}$tmp"
    for d in $(printf '%s\n' "${deps[@]}" | sort -u); do
        pkg_installed "$d" "$ROOT" || missing+=("$d")
    done
    if ((${#missing[@]})); then
        log "trixie root: apt-get install libraries for 10.0: ${missing[*]}"
        in_root apt-get install "${APT_OPTS[@]}" "${missing[@]}" >/dev/null
    fi
    if in_root ldd "$Q10_IN_ROOT.tmp/usr/bin/qemu-system-aarch64" | grep -q 'not found'; then
        in_root ldd "$Q10_IN_ROOT.tmp/usr/bin/qemu-system-aarch64" | grep 'not found' >&2
        die "QEMU 10.0 (trixie) misses shared libraries"
    fi
    rm -rf "${dest:?}"
    mv "$dest.tmp" "$dest"
    touch "$dest/.lab-ok"
}

step_guest() {
    local sum
    [[ -f $GUEST_SRC ]] || die "guest source $GUEST_SRC not found"
    sum=$(sha256sum < "$GUEST_SRC" | cut -d' ' -f1)
    if [[ ! -f $LAB_DIR/tick.bin || $(cat "$LAB_DIR/tick.src.sha256" 2>/dev/null) != "$sum" ]]; then
        log "building the guest $LAB_DIR/tick.bin"
        local b
        b=$(mktemp -d "$LAB_DIR/.guest.XXXXXX")
        aarch64-linux-gnu-as -o "$b/tick.o" "$GUEST_SRC"
        aarch64-linux-gnu-ld -nostdlib -z noexecstack --build-id=none -Ttext=0x40080000 \
            -o "$b/tick.elf" "$b/tick.o"
        aarch64-linux-gnu-objcopy -O binary "$b/tick.elf" "$b/tick.bin"
        mv "$b/tick.bin" "$LAB_DIR/tick.bin"
        mv "$b/tick.elf" "$LAB_DIR/tick.elf"
        echo "$sum" > "$LAB_DIR/tick.src.sha256"
        remove_tree "$b"
    fi
    # The same path must work inside the trixie root.
    mkdir -p "$ROOT$LAB_DIR"
    cmp -s "$LAB_DIR/tick.bin" "$ROOT$LAB_DIR/tick.bin" || cp "$LAB_DIR/tick.bin" "$ROOT$LAB_DIR/tick.bin"
}

# Run a version's --version the way lab.json will describe it; echo the line.
version_line() {   # key
    case $1 in
        7.2) env QEMU_MODULE_DIR="$(modules_dir "$Q72")" "$Q72/usr/bin/qemu-system-aarch64" \
                -L "$Q72/usr/share/qemu" --version ;;
        10.0.2) /usr/bin/qemu-system-aarch64 --version ;;
        10.0.13) in_root env QEMU_MODULE_DIR="$(modules_dir "$Q10_IN_ROOT" "$ROOT")" \
                "$Q10_IN_ROOT/usr/bin/qemu-system-aarch64" -L "$Q10_IN_ROOT/usr/share/qemu" --version ;;
        11.1) in_root /usr/bin/qemu-system-aarch64 --version ;;
    esac | head -n1
}

modules_dir() {   # prefix [root] -> prefix/usr/lib/<triplet>/qemu as seen inside root
    local prefix=$1 root=${2:-} d
    for d in "$root$prefix"/usr/lib/*/qemu; do
        if [[ -d $d ]]; then echo "${d#"$root"}"; return; fi
    done
    echo "$prefix/usr/lib/qemu"
}

step_analyzer() {
    # QEMU's own stream analyser (scripts/analyze-migration.py, stdlib Python), taken from
    # the 10.0.13 release tree that Debian's package pool serves as the orig tarball.
    local dest=$LAB_DIR/tools/analyze-migration.py
    [[ -s $dest ]] && return 0
    local url
    url="$(mirror_uri)/pool/main/q/qemu/qemu_10.0.13+ds.orig.tar.xz"
    log "fetching scripts/analyze-migration.py from the QEMU 10.0.13 orig tarball"
    mkdir -p "$LAB_DIR/tools"
    local tmp
    tmp=$(mktemp -d "$LAB_DIR/tools/.fetch.XXXXXX")
    curl -fsSL "$url" | tar -xJf - -C "$tmp" --wildcards '*/scripts/analyze-migration.py' \
        || die "could not fetch analyze-migration.py from $url"
    mv "$(find "$tmp" -name analyze-migration.py | head -n1)" "$dest"
    rm -rf "$tmp"
}

step_verify_and_describe() {
    local key line v ok=1 expect
    declare -A VERS LINES
    for key in 7.2 10.0.2 10.0.13 11.1; do
        line=$(version_line "$key" 2>&1 || true)
        v=$(qemu_version_of "$line")
        case $key in
            7.2) expect=$EXPECT_72 ;; 10.0.2) expect=$EXPECT_HOST ;;
            10.0.13) expect=$EXPECT_T10 ;; 11.1) expect=$EXPECT_T11 ;;
        esac
        if [[ $v =~ ^$expect$ ]]; then
            printf '  %-8s %s\n' "$key" "$line" >&2
        else
            printf '  %-8s UNEXPECTED: %s (want %s)\n' "$key" "$line" "$expect" >&2
            ok=0
        fi
        VERS[$key]=$v
        LINES[$key]=$line
    done
    ((ok)) || die "QEMU version check failed"

    LAB_DIR="$LAB_DIR" ROOT="$ROOT" WORK="$WORK" Q72="$Q72" Q10="$Q10_IN_ROOT" \
    M72="$(modules_dir "$Q72")" M10="$(modules_dir "$Q10_IN_ROOT" "$ROOT")" \
    V72="${VERS[7.2]}" V102="${VERS[10.0.2]}" V1013="${VERS[10.0.13]}" V111="${VERS[11.1]}" \
    L72="${LINES[7.2]}" L102="${LINES[10.0.2]}" L1013="${LINES[10.0.13]}" L111="${LINES[11.1]}" \
    python3 - <<'PY'
import json, os, time
e = os.environ
lab, root, work = e["LAB_DIR"], e["ROOT"], e["WORK"]
q72, q10 = e["Q72"], e["Q10"]
def entry(version, line, argv, env, chroot):
    return {"version": version, "version_line": line, "argv": argv, "env": env,
            "chroot": chroot, "binary": argv[-3] if "-L" in argv else argv[-1]}
desc = {
    "format": 1,
    "lab_dir": lab,
    "work_dir": work,
    "kernel": os.path.join(lab, "tick.bin"),
    "root": root,
    "shared_dirs": [work],
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "qemu": {
        "7.2": entry(e["V72"], e["L72"],
                     [f"{q72}/usr/bin/qemu-system-aarch64", "-L", f"{q72}/usr/share/qemu"],
                     {"QEMU_MODULE_DIR": e["M72"]}, None),
        "10.0.2": entry(e["V102"], e["L102"], ["/usr/bin/qemu-system-aarch64"], {}, None),
        "10.0.13": entry(e["V1013"], e["L1013"],
                         ["chroot", root, f"{q10}/usr/bin/qemu-system-aarch64",
                          "-L", f"{q10}/usr/share/qemu"],
                         {"QEMU_MODULE_DIR": e["M10"]}, root),
        "11.1": entry(e["V111"], e["L111"], ["chroot", root, "/usr/bin/qemu-system-aarch64"],
                      {}, root),
    },
}
tmp = os.path.join(lab, "lab.json.tmp")
with open(tmp, "w") as f:
    json.dump(desc, f, indent=2)
    f.write("\n")
os.replace(tmp, os.path.join(lab, "lab.json"))
PY
    log "wrote $LAB_DIR/lab.json"
}

# ---------------------------------------------------------------- main

[[ $(id -u) == 0 ]] || die "run as root"

case ${1:-} in
    --mount) [[ -f $ROOT/.lab-debootstrap-ok ]] || die "no trixie root yet"; ensure_mounts; exit 0 ;;
    --unmount) unmount_root; exit 0 ;;
    --purge) unmount_root; [[ -d $LAB_DIR ]] && remove_tree "$LAB_DIR"; exit 0 ;;
    "") ;;
    *) die "unknown argument: $1 (use --mount, --unmount or --purge)" ;;
esac

mkdir -p "$LAB_DIR" "$WORK"
step_host_packages
step_qemu72
step_trixie_root
step_trixie_qemu11
step_trixie_qemu10
step_guest
step_analyzer
step_verify_and_describe
log "lab ready in $LAB_DIR"
