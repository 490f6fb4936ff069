#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian 12 machine, then run it.
#
#   scripts/test.sh [pytest args...]
#
# As a user with sudo it runs itself with sudo (the labs need root); as a user without
# sudo it runs without the labs (their tests skip and say so).
#
# 1. installs migproxy and its test dependencies (pip, editable);
# 2. sets up the QEMU lab (QEMU 7.2, 10.0.2, 10.0.13 and 11.1.3 from Debian packages, the
#    tick guest) with scripts/lab-setup.sh, and the nested KVM lab (arm64 Debian kernels
#    running KVM under QEMU TCG) with scripts/kvm-lab-setup.sh -- this needs root; without
#    root the real-QEMU tests are skipped (and say so) unless MIGPROXY_REQUIRE_LAB=1 (the
#    KVM ones: MIGPROXY_REQUIRE_KVM_LAB=1);
# 3. runs ruff, mypy and the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ] && [ -z "${MIGPROXY_NO_SUDO:-}" ] && command -v sudo >/dev/null; then
    exec sudo --preserve-env=PYTHON,MIGPROXY_VENV,LAB_DIR,MIGPROXY_NO_SUDO "$0" "$@"
fi

BASE_PYTHON=${PYTHON:-python3}
VENV=${MIGPROXY_VENV:-.venv}
echo "== installing migproxy and test dependencies into $VENV"
if [ ! -x "$VENV/bin/python" ]; then
    # Debian's own python3 is "externally managed" (PEP 668): use a virtual environment.
    if ! "$BASE_PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ]; then
            apt-get install -y -q python3-venv >/dev/null
            "$BASE_PYTHON" -m venv "$VENV"
        else
            echo "cannot create a virtual environment: install python3-venv" >&2
            exit 1
        fi
    fi
fi
PYTHON="$VENV/bin/python"
if [ "$(id -u)" = 0 ]; then
    # The compiled RAM record walk (migproxy/stream/_ramwalk.c) needs a C compiler and the
    # Python headers; the suite then runs every core test with it and without it.
    if ! command -v gcc >/dev/null || [ ! -f "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
        apt-get install -y -q gcc python3-dev >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q gcc python3-dev >/dev/null; }
    fi
    export MIGPROXY_REQUIRE_EXTENSIONS=${MIGPROXY_REQUIRE_EXTENSIONS:-1}
elif ! command -v gcc >/dev/null || [ ! -f "$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
    echo "== no C compiler or Python headers (and not root): testing the pure-Python RAM walk only"
    export MIGPROXY_PYTHON_WALK=1
fi
# The fuzz extra (atheris) where it installs: the suite's short fuzz run is coverage-guided.
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test,fuzz]" \
    || "$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test]"
"$PYTHON" -c 'from migproxy.stream.framer import IMPLEMENTATION as I; print(f"== RAM record walk: {I}")'

if [ "$(id -u)" = 0 ]; then
    echo "== setting up the QEMU lab"
    bash scripts/lab-setup.sh
    export MIGPROXY_REQUIRE_LAB=${MIGPROXY_REQUIRE_LAB:-1}
    echo "== setting up the nested KVM lab (arm64 kernels with KVM under QEMU TCG)"
    bash scripts/kvm-lab-setup.sh
    export MIGPROXY_REQUIRE_KVM_LAB=${MIGPROXY_REQUIRE_KVM_LAB:-1}
    echo "== tools for the deployment checks, the save-image tests and the benchmark smoke run"
    command -v systemd-analyze >/dev/null || apt-get install -y -q systemd >/dev/null
    command -v socat >/dev/null || apt-get install -y -q socat >/dev/null
    # The compressors of libvirt save images (tests/tools/test_saveimage.py makes an image in
    # every format; gzip, bzip2 and xz are in every Debian base system).
    for prog in lzop zstd; do
        command -v "$prog" >/dev/null || apt-get install -y -q "$prog" >/dev/null
    done
    command -v openssl >/dev/null || apt-get install -y -q openssl >/dev/null  # TLS test certificates
    # libvirt for the virsh save / restore test (tests/e2e/test_virsh_restore.py starts a
    # daemon of its own in a private mount namespace; the host's libvirt is not configured).
    # From bookworm-backports, which scripts/lab-setup.sh added for QEMU 10.0.2.
    if ! command -v libvirtd >/dev/null || ! command -v virtlogd >/dev/null \
            || ! command -v virsh >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            -t bookworm-backports libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
            >/dev/null
    fi
    TOOLS=${MIGPROXY_TOOLS_DIR:-/var/cache/migproxy-lab/tools}
    if ! command -v promtool >/dev/null && [ ! -x "$TOOLS/prometheus/usr/bin/promtool" ]; then
        # Only the promtool binary: unpack the package instead of installing it, so no
        # Prometheus server is configured or started on the machine.
        mkdir -p "$TOOLS/prometheus"
        (cd "$TOOLS" && apt-get download prometheus >/dev/null \
            && dpkg -x prometheus_*.deb "$TOOLS/prometheus" && rm -f prometheus_*.deb)
    fi
    [ -x "$TOOLS/prometheus/usr/bin/promtool" ] && export PATH="$PATH:$TOOLS/prometheus/usr/bin"
    export MIGPROXY_REQUIRE_TOOLS=${MIGPROXY_REQUIRE_TOOLS:-1}
else
    echo "== not root: the QEMU lab is not set up; real-QEMU tests will be skipped"
fi

echo "== ruff"
"$PYTHON" -m ruff check migproxy testkit tests bench scripts

echo "== mypy (strict, the whole package: pyproject.toml)"
"$PYTHON" -m mypy

echo "== pytest"
# The 20 slowest tests are listed at the end. --timeout is for the QEMU and KVM tests (some
# take about 2 minutes); the others get 60 s each, 180 s if marked slow (tests/conftest.py).
# The fast tier: scripts/test.sh -m "not qemu and not kvm".
exec "$PYTHON" -m pytest -q -p no:cacheprovider --durations=20 --timeout=600 "$@"
