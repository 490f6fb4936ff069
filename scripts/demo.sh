#!/usr/bin/env bash
# The migproxy demonstration, in one command, on a fresh Debian 12 machine:
#
#   scripts/demo.sh          (as root, or as a user with sudo: it runs itself with sudo)
#
# 1. installs migproxy from this checkout (python -m pip install .) into its own virtual
#    environment, $LAB_DIR/venv (Debian's Python is "externally managed": pip does not
#    install into it), with python3-venv from apt if needed;
# 2. sets up the QEMU lab with scripts/lab-setup.sh (QEMU 10.0.2 and 10.0.13 among others,
#    the tick guest; about a minute the first time, under a second afterwards);
# 3. runs scripts/demo.py: a running ARM guest fails to migrate from QEMU 10.0.2 to 10.0.13
#    directly, then migrates through migproxy and continues.
#
# Environment: LAB_DIR (default /var/cache/migproxy-lab), MIGPROXY_VENV (default
# $LAB_DIR/venv), PYTHON (the Python that creates the environment, default python3).
# `scripts/lab-setup.sh --purge` removes the lab, the environment with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LAB_DIR=${LAB_DIR:-/var/cache/migproxy-lab}
VENV=${MIGPROXY_VENV:-$LAB_DIR/venv}
PYTHON=${PYTHON:-python3}
export LAB_DIR DEBIAN_FRONTEND=noninteractive

say() { printf '\n== %s\n' "$*"; }
die() { printf '\ndemo.sh: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) != 0 ]]; then
    # It installs packages and runs QEMU in a chroot: root, through sudo when there is one.
    command -v sudo >/dev/null || die "run as root: it installs packages and runs QEMU in a chroot"
    exec sudo --preserve-env=LAB_DIR,MIGPROXY_VENV,PYTHON "$0" "$@"
fi

say "installing migproxy from $(pwd) into $VENV"
apt_install() {
    echo "apt-get install $*"
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "$@" >/dev/null || die "could not install $*"
}
command -v "$PYTHON" >/dev/null || apt_install python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "migproxy needs Python 3.11 or later ($PYTHON is $("$PYTHON" -V 2>&1))"
if [[ -e $VENV && ! -f $VENV/pyvenv.cfg ]] && [[ -n $(ls -A "$VENV") ]]; then
    die "$VENV exists and is not a virtual environment (set MIGPROXY_VENV)"
fi
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian ships venv's pip bootstrap separately.
        rm -rf "$VENV"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV" || die "could not create a virtual environment in $VENV"
    fi
fi
# The compiled RAM walk (the default build) needs a C compiler and the Python headers.
include=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if ! command -v gcc >/dev/null || [[ ! -f $include/Python.h ]]; then
    apt_install gcc python3-dev
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check . \
    || die "pip could not install migproxy from $(pwd)"
"$VENV/bin/migproxy" --version

say "setting up the QEMU lab (scripts/lab-setup.sh)"
bash scripts/lab-setup.sh || die "scripts/lab-setup.sh failed"

say "running the demonstration (scripts/demo.py)"
"$VENV/bin/python" scripts/demo.py || die "the demonstration failed (exit status $?)"
echo
echo "migproxy is installed in $VENV: $VENV/bin/migproxy --help"
