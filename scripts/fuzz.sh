#!/usr/bin/env bash
# Fuzz the stream engine and the save-image reader (testkit/fuzz.py), for as long as wanted:
#
#   scripts/fuzz.sh            until interrupted (Ctrl-C)
#   scripts/fuzz.sh 4h         four hours (also 30m, 600s, 600)
#   scripts/fuzz.sh 4h -- -jobs=2 -workers=2    libFuzzer options after --
#
# Installs migproxy with its test and fuzz extras into $MIGPROXY_VENV (default .venv, the
# one scripts/test.sh uses). With atheris (the fuzz extra) the run is coverage-guided and
# keeps its corpus in .fuzz/corpus (seeded from tests/data and tests/data/kvm; a later run
# goes on from it); a failing input is written as .fuzz/crash-<hash> and the run stops
# with its traceback. Without atheris (no wheel for this platform or
# Python) the same target runs on random mutations of the seeds and writes a failing
# input to .fuzz/crash-*. Replay one: python -m testkit.fuzz --replay FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MIGPROXY_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test,fuzz]" \
    || "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"
args=()
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    args+=(--time "$1")
    shift
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/python" -m testkit.fuzz "${args[@]}" "$@"
