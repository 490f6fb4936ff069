#!/usr/bin/env bash
# kvm-lab-setup.sh - set up the migproxy "nested KVM lab": arm64 Debian kernels (L1) that
# run KVM inside the host's QEMU TCG (L0, -M virt,virtualization=on), with Debian's arm64
# QEMU 7.2 and 10.0 inside them to run the tick guest (L2) with -accel kvm -cpu host.
# Described in $LAB_DIR/kvm/kvm-lab.json for the Python harness (migproxy/lab/kvm.py).
#
#   kernel key  suite                          arm64 QEMU in the initramfs
#   6.1         bookworm (+updates, security)  7.2   at /            (bookworm userland)
#   6.12        trixie   (+updates, security)  10.0  at /trixie       (trixie userland, chroot)
#   bpo         trixie-backports (the newest kernel there; its release is in kvm-lab.json)
#
# Nothing arm64 runs on this host and its apt/dpkg state is not touched: the .debs are
# fetched with a private apt configuration (Dir::State/Cache/Etc under $LAB_DIR/kvm/apt,
# an empty dpkg status, APT::Architecture=arm64) and unpacked with dpkg-deb (no maintainer
# scripts).  The Debian mirror is read from the machine's own apt sources.
#
# Usage (as root):   scripts/kvm-lab-setup.sh          set up / repair; fast when done
#                    scripts/kvm-lab-setup.sh --purge  delete $LAB_DIR/kvm
# Environment:       LAB_DIR (default /var/cache/migproxy-lab; scripts/lab-setup.sh must
#                    have run: the initramfs takes its $LAB_DIR/tick.bin)
#
# Result, below $LAB_DIR/kvm:
#   kernels/KEY/vmlinuz        the kernel for qemu -kernel
#   kernels/KEY/modules.cpio   only the modules /init loads (9p over virtio, virtio-net),
#                              with a modules.dep made by the host's depmod
#   base.cpio                  the initramfs without modules (boot with base.cpio followed
#                              by the kernel's modules.cpio: the kernel takes concatenated
#                              cpio archives)
#   runs/                      where the harness puts its L1 runs (world-writable, sticky)
#   kvm-lab.json
set -euo pipefail

LAB_DIR=${LAB_DIR:-/var/cache/migproxy-lab}
LAB_DIR=${LAB_DIR%/}
KVM=$LAB_DIR/kvm
ROOTS=$KVM/roots               # the unpacked userlands, ROOTS/NAME (+ NAME.qemu, NAME.ok)
KERNELS=$KVM/kernels
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/debian-sources.sh
source "$SCRIPT_DIR/lib/debian-sources.sh"

USERLAND_PKGS=(qemu-system-arm busybox-static socat kmod iproute2)
L1_MODULES=(9p 9pnet_virtio virtio_pci virtio_mmio virtio_net)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
L0_QEMU=/usr/bin/qemu-system-aarch64   # L0: installed by scripts/lab-setup.sh (10.0.2)

export DEBIAN_FRONTEND=noninteractive
T0=$(date +%s)

log() { printf '[kvm-lab-setup %3ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'kvm-lab-setup: ERROR: %s\n' "$*" >&2; exit 1; }

remove_tree() {   # only ever below $KVM
    [[ $1 == "$KVM"/* || $1 == "$KVM" ]] || die "refusing to delete $1"
    rm -rf --one-file-system -- "$1"
}

# ---------------------------------------------------------------- private apt

# apt_private NAME ARGS...: apt-get on the private state of distribution NAME.
apt_private() {
    local a=$KVM/apt/$1
    shift
    apt-get -q -y \
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64 \
        -o Dir::State="$a/state" -o Dir::State::status="$a/state/status" \
        -o Dir::Cache="$a/cache" -o Dir::Etc="$a/etc" \
        -o APT::Install-Recommends=false -o APT::Install-Suggests=false \
        -o APT::Sandbox::User=root -o Debug::NoLocking=1 -o Dpkg::Use-Pty=0 "$@"
}

# apt_init NAME SUITE...: a private apt state whose sources are SUITE... of the archive
# that serves the host's bookworm (a suite ending in -security: of the host's security
# archive), with fresh package lists.
apt_init() {
    local name=$1 a=$KVM/apt/$1 s uri main security
    shift
    # The host's sources name bookworm only; the same archives serve trixie.
    main=$(source_uri bookworm) || die "cannot tell the Debian mirror"
    security=$(source_uri bookworm-security) || die "cannot tell the Debian security archive"
    remove_tree "$a"
    mkdir -p "$a/state/lists/partial" "$a/cache/archives/partial" \
        "$a/etc/sources.list.d" "$a/etc/preferences.d" "$a/etc/apt.conf.d"
    : > "$a/state/status"
    for s in "$@"; do
        case $s in *-security) uri=$security ;; *) uri=$main ;; esac
        echo "deb [arch=arm64 signed-by=$KEYRING] $uri $s main" >> "$a/etc/sources.list"
    done
    log "$name: apt-get update ($*)"
    apt_private "$name" update >/dev/null
}

# apt_fetch NAME DIR ARGS...: download ARGS (packages, options) and their dependencies
# without Recommends into DIR (an empty private archive directory).
apt_fetch() {
    local name=$1 dir=$2
    shift 2
    mkdir -p "$dir/partial"
    apt_private "$name" -o Dir::Cache::archives="$dir/" install --download-only "$@" >/dev/null
    rm -rf "$dir/partial" "$dir/lock"
    log "$name: fetched $(find "$dir" -name '*.deb' | wc -l) debs for $* ($(du -sh "$dir" | cut -f1))"
}

# ---------------------------------------------------------------- unpacking

# unpack_debs ROOT DEB...: the data of each .deb into ROOT, which gets the merged-/usr
# symlinks first so that packages with /lib, /bin paths and /usr ones meet.
unpack_debs() {
    local root=$1 deb l
    shift
    mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib"
    for l in bin sbin lib; do
        [[ -e $root/$l ]] || ln -s "usr/$l" "$root/$l"
    done
    for deb in "$@"; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root"
    done
}

# userland NAME ARCHIVES: the userland .debs unpacked into ROOTS/NAME, pruned for the
# initramfs; ROOTS/NAME.qemu tells the QEMU version.
userland() {
    local name=$1 archives=$2 root=$KVM/tmp/root-$1 deb debs=()
    for deb in "$archives"/*.deb; do
        case ${deb##*/} in linux-*) continue ;; esac
        debs+=("$deb")
    done
    remove_tree "$root"
    unpack_debs "$root" "${debs[@]}"
    remove_tree "$root/usr/share/doc"
    rm -rf "${root:?}"/usr/share/{man,info,locale,lintian,bash-completion} "$root/boot" \
        "$root/usr/lib/modules" "$root/etc/kernel" "$root/usr/bin/qemu-system-arm"
    mkdir -p "$root"/{proc,sys,dev,tmp,mnt,run,root,var/tmp}
    ln -sf busybox "$root/usr/bin/sh"   # QEMU's exec: migration runs /bin/sh -c
    local line version
    line=$(grep -a -o 'QEMU emulator version [ -~]*' "$root/usr/bin/qemu-system-aarch64" \
        | head -n1) || true
    [[ -n $line ]] || die "no version string in $root/usr/bin/qemu-system-aarch64"
    version=$(dpkg-deb -f "$archives"/qemu-system-arm_*.deb Version)
    rm -f "$ROOTS/$name.ok"
    mkdir -p "$ROOTS"
    remove_tree "$ROOTS/$name"
    mv "$root" "$ROOTS/$name"
    printf 'version_line=%s\npackage_version=%s\n' "$line" "$version" > "$ROOTS/$name.qemu"
    touch "$ROOTS/$name.ok"
    log "userland $name: $(du -sh "$ROOTS/$name" | cut -f1), $line"
}

# kernel KEY SUITE ARCHIVES: kernels/KEY from the kernel .debs in ARCHIVES (bookworm and
# trixie ship linux-image-VER; newer backports split it into linux-{binary,modules,base}-VER).
kernel() {
    local key=$1 suite=$2 archives=$3 k=$KERNELS/$1 tmp deb debs=() release m image
    tmp=$KVM/tmp/kernel-$key
    remove_tree "$tmp"
    for deb in "$archives"/linux-{image,binary,modules,base}-[0-9]*.deb; do
        [[ -e $deb ]] && debs+=("$deb")
    done
    ((${#debs[@]})) || die "no kernel .deb in $archives"
    unpack_debs "$tmp/full" "${debs[@]}"
    m=$(find "$tmp/full/usr/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)
    [[ -n $m ]] || die "no module tree in the $key kernel"
    release=${m##*/}
    image=$(find "$tmp/full/boot/vmlinuz-$release" "$m/vmlinuz" 2>/dev/null | head -n1) || true
    [[ -n $image ]] || die "no vmlinuz for $release"
    depmod -b "$tmp/full" "$release"
    # Only the modules /init loads, with what they depend on.
    local mod path rel mods=()
    for mod in "${L1_MODULES[@]}"; do
        while read -r path; do mods+=("$path"); done < <(
            modprobe -d "$tmp/full" -S "$release" --show-depends "$mod" \
                | awk '$1 == "insmod" { print $2 }')
    done
    mkdir -p "$tmp/min/usr/lib/modules/$release"
    ln -s usr/lib "$tmp/min/lib"
    for path in $(printf '%s\n' "${mods[@]}" | sort -u); do
        rel=${path#"$tmp/full/lib/modules/$release/"}
        mkdir -p "$(dirname "$tmp/min/usr/lib/modules/$release/$rel")"
        cp "$path" "$tmp/min/usr/lib/modules/$release/$rel"
    done
    cp "$m"/modules.order "$m"/modules.builtin "$m"/modules.builtin.modinfo \
        "$tmp/min/usr/lib/modules/$release/" 2>/dev/null || true
    depmod -b "$tmp/min" "$release"
    remove_tree "$k"
    mkdir -p "$k"
    (cd "$tmp/min" && find usr | LC_ALL=C sort | cpio -o -H newc --quiet > "$k/modules.cpio")
    cp "$image" "$k/vmlinuz"
    # The versioned image (or binary) package names the kernel build.
    deb=$(printf '%s\n' "${debs[@]}" | grep -E '/linux-(binary|image)-[0-9]' | tail -n1)
    printf 'suite=%s\nrelease=%s\npackage=%s\nversion=%s\nmodules=%s\n' "$suite" "$release" \
        "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" \
        "$(find "$tmp/min" -name '*.ko*' -printf '%f\n' | sort | tr '\n' ' ')" > "$k/kernel.env"
    remove_tree "$tmp"
    touch "$k/.ok"
    log "kernel $key: $release, $(wc -w < <(grep '^modules=' "$k/kernel.env")) modules"
}

# ---------------------------------------------------------------- distributions

# bookworm: QEMU 7.2 userland at / of the initramfs, kernel 6.1.
dist_bookworm() {
    [[ -f $ROOTS/bookworm.ok && -f $KERNELS/6.1/.ok ]] && return 0
    local a=$KVM/apt/bookworm
    apt_init bookworm bookworm bookworm-updates bookworm-security
    apt_fetch bookworm "$a/userland" "${USERLAND_PKGS[@]}"
    apt_fetch bookworm "$a/kernel" linux-image-arm64
    kernel 6.1 bookworm "$a/kernel"
    userland bookworm "$a/userland"
    remove_tree "$a"
}

# trixie: QEMU 10.0 userland at /trixie, kernel 6.12 and the newest backports kernel.
dist_trixie() {
    [[ -f $ROOTS/trixie.ok && -f $KERNELS/6.12/.ok && -f $KERNELS/bpo/.ok ]] && return 0
    local a=$KVM/apt/trixie
    apt_init trixie trixie trixie-updates trixie-security trixie-backports
    apt_fetch trixie "$a/userland" "${USERLAND_PKGS[@]}"
    apt_fetch trixie "$a/kernel" linux-image-arm64
    apt_fetch trixie "$a/bpo" -t trixie-backports linux-image-arm64
    kernel 6.12 trixie "$a/kernel"
    kernel bpo trixie-backports "$a/bpo"
    userland trixie "$a/userland"
    remove_tree "$a"
}

# ---------------------------------------------------------------- initramfs

write_init() {   # the L1 /init (busybox sh)
    cat <<'EOF'
#!/usr/bin/busybox sh
# L1 init (migproxy nested KVM lab): mount the basics, load the virtio/9p modules, mount
# the host's 9p share at /mnt (also inside the trixie chroot), bring up slirp networking
# when there is a NIC, run /mnt/run.sh (output to /mnt/run.log), power off.
/usr/bin/busybox mkdir -p /bb
/usr/bin/busybox --install -s /bb
export PATH=/usr/sbin:/usr/bin:/bb HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts
mount -t devpts pts /dev/pts
echo "L1 init: $(uname -r) up $(cut -d' ' -f1 /proc/uptime)s"
for m in virtio_pci virtio_mmio 9pnet_virtio 9p virtio_net; do modprobe "$m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt || echo "L1 init: no 9p share"
for d in dev dev/pts proc sys mnt tmp; do mount --bind "/$d" "/trixie/$d"; done
chroot /trixie /usr/bin/busybox mkdir -p /bb
chroot /trixie /usr/bin/busybox --install -s /bb
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then   # QEMU user networking (slirp) defaults
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi
if [ -f /mnt/run.sh ]; then
    sh /mnt/run.sh > /mnt/run.log 2>&1
    echo "L1 init: run.sh exit $?"
fi
sync
umount /trixie/mnt /mnt 2>/dev/null
echo "L1 init: poweroff at $(cut -d' ' -f1 /proc/uptime)s"
poweroff -f
EOF
}

# cpio_of DIR PATH...: a newc archive (stdout) of PATH... (relative to DIR, recursively).
cpio_of() {
    local dir=$1
    shift
    (cd "$dir" && find "$@" | LC_ALL=C sort | cpio -o -H newc --quiet)
}

# base.cpio: three archives back to back, which the kernel unpacks in turn: the bookworm
# root at /, the trixie root at /trixie, then /init and the tick guest in both roots.
# Rebuilt when a root, tick.bin or /init changes.
initramfs() {
    local tick=$LAB_DIR/tick.bin inputs extra=$KVM/tmp/extra
    [[ -f $tick ]] || die "$tick not found: run scripts/lab-setup.sh first"
    inputs="$(sha256sum < "$tick" | cut -d' ' -f1) $(write_init | sha256sum | cut -d' ' -f1)"
    if [[ -f $KVM/base.cpio && $(cat "$KVM/base.cpio.inputs" 2>/dev/null) == "$inputs" \
            && ! $ROOTS/bookworm.ok -nt $KVM/base.cpio && ! $ROOTS/trixie.ok -nt $KVM/base.cpio ]]
    then
        return 0
    fi
    log "writing base.cpio"
    remove_tree "$extra"
    mkdir -p "$extra/trixie"
    write_init > "$extra/init"
    chmod 755 "$extra/init"
    cp "$tick" "$extra/tick.bin"
    cp "$tick" "$extra/trixie/tick.bin"
    { cpio_of "$ROOTS/bookworm" .; cpio_of "$ROOTS" trixie; cpio_of "$extra" .; } \
        > "$KVM/base.cpio.tmp"
    mv "$KVM/base.cpio.tmp" "$KVM/base.cpio"
    echo "$inputs" > "$KVM/base.cpio.inputs"
    log "base.cpio: $(du -h "$KVM/base.cpio" | cut -f1)"
}

describe() {
    local json=$KVM/kvm-lab.json f
    if [[ -f $json ]]; then
        local newer=0
        for f in "$KVM/base.cpio" "$KERNELS"/*/.ok "$L0_QEMU"; do
            [[ $f -nt $json ]] && newer=1
        done
        ((newer)) || return 0
    fi
    KVM="$KVM" ROOTS="$ROOTS" KERNELS="$KERNELS" TICK="$LAB_DIR/tick.bin" L0="$L0_QEMU" \
    L0_LINE="$("$L0_QEMU" --version | head -n1)" python3 - <<'PY'
import hashlib, json, os, time
e = os.environ
kvm, roots, kernels = e["KVM"], e["ROOTS"], e["KERNELS"]

def env_file(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            out[k] = v
    return out

def qemu(name, chroot):
    meta = env_file(os.path.join(roots, name + ".qemu"))
    line = meta["version_line"]
    version = line.split()[3]
    argv = (["chroot", chroot] if chroot else []) + ["/usr/bin/qemu-system-aarch64"]
    return {"version": version, "version_line": line,
            "package_version": meta["package_version"], "argv": argv, "chroot": chroot}

desc = {
    "format": 1,
    "kvm_dir": kvm,
    "runs_dir": os.path.join(kvm, "runs"),
    "base_initramfs": os.path.join(kvm, "base.cpio"),
    "tick_sha256": hashlib.sha256(open(e["TICK"], "rb").read()).hexdigest(),
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    # The cpreg lists depend on the CPU features L0 emulates, so on its version.
    "l0": {"argv": [e["L0"]], "version_line": e["L0_LINE"]},
    "kernels": {},
    "qemu": {"7.2": qemu("bookworm", None), "10.0": qemu("trixie", "/trixie")},
}
for key in sorted(os.listdir(kernels)):
    k = os.path.join(kernels, key)
    meta = env_file(os.path.join(k, "kernel.env"))
    desc["kernels"][key] = {
        "suite": meta["suite"], "release": meta["release"], "package": meta["package"],
        "version": meta["version"], "modules": meta["modules"].split(),
        "vmlinuz": os.path.join(k, "vmlinuz"), "modules_cpio": os.path.join(k, "modules.cpio"),
    }
tmp = os.path.join(kvm, "kvm-lab.json.tmp")
with open(tmp, "w") as f:
    json.dump(desc, f, indent=2)
    f.write("\n")
os.replace(tmp, os.path.join(kvm, "kvm-lab.json"))
for key, k in desc["kernels"].items():
    print(f"  kernel {key:5} {k['release']:24} {k['package']} {k['version']}")
for key, q in desc["qemu"].items():
    print(f"  qemu   {key:5} {q['version_line']}")
print(f"  L0           {desc['l0']['version_line']}")
PY
    log "wrote $json"
}

# ---------------------------------------------------------------- main

[[ $(id -u) == 0 ]] || die "run as root"

case ${1:-} in
    --purge) [[ -d $KVM ]] && remove_tree "$KVM"; exit 0 ;;
    "") ;;
    *) die "unknown argument: $1 (use --purge)" ;;
esac

need=()
for p in kmod cpio; do
    [[ $(dpkg-query -W -f '${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || need+=("$p")
done
if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    apt-get update -q -o Dpkg::Use-Pty=0 >/dev/null
    apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${need[@]}" >/dev/null
fi

[[ -x $L0_QEMU ]] || die "$L0_QEMU (L0) not found: run scripts/lab-setup.sh first"
mkdir -p "$KVM/tmp" "$KERNELS" "$KVM/runs"
chmod 1777 "$KVM/runs"
# The harness keeps its run directories for inspection: forget those of last week.
find "$KVM/runs" -mindepth 1 -maxdepth 1 -mtime +7 -exec rm -rf --one-file-system {} +
# The two distributions are independent (network, then xz): one job each for the 2 CPUs.
dist_bookworm > "$KVM/tmp/bookworm.log" 2>&1 &
bookworm_pid=$!
dist_trixie > "$KVM/tmp/trixie.log" 2>&1 &
trixie_pid=$!
ok=1
wait "$bookworm_pid" || ok=0
cat "$KVM/tmp/bookworm.log" >&2
wait "$trixie_pid" || ok=0
cat "$KVM/tmp/trixie.log" >&2
((ok)) || die "preparing the distributions failed (see above)"
initramfs
describe
remove_tree "$KVM/tmp"
rmdir "$KVM/apt" 2>/dev/null || true
log "nested KVM lab ready in $KVM"
