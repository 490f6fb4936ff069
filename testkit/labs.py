"""The QEMU labs and the programs a test needs, as a test sees them: skip, or fail when
the environment says they must be there (``MIGPROXY_REQUIRE_LAB=1``,
``MIGPROXY_REQUIRE_KVM_LAB=1``, ``MIGPROXY_REQUIRE_TOOLS``; scripts/test.sh sets them as
root, where it sets the labs up).

The labs themselves are ``migproxy.lab`` (the harness, in the checkout, not in the
wheel)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from migproxy.lab import Lab, LabUnavailable, get_lab
from migproxy.lab.kvm import KvmLab, get_kvm_lab

REQUIRE_ENV = "MIGPROXY_REQUIRE_LAB"
REQUIRE_KVM_ENV = "MIGPROXY_REQUIRE_KVM_LAB"


def lab_unavailable(e: LabUnavailable, what: str, env: str) -> NoReturn:
    """Skip the test, or (with ``env`` set to 1) fail it: the lab is missing."""
    if os.environ.get(env) == "1":
        raise LabUnavailable(f"{e} ({env}=1, so this is an error, not a skip)") from None
    pytest.skip(f"{what} unavailable: {e}")


def require_lab(*versions: str) -> Lab:
    """The QEMU lab with these versions, or skip the test; with ``MIGPROXY_REQUIRE_LAB=1``
    (set by scripts/test.sh as root, where the lab is always set up) a missing lab fails."""
    try:
        return get_lab().require(*versions)
    except LabUnavailable as e:
        lab_unavailable(e, "QEMU lab", REQUIRE_ENV)


def require_kvm_lab() -> KvmLab:
    """The nested KVM lab, or skip the test; with ``MIGPROXY_REQUIRE_KVM_LAB=1`` (set by
    scripts/test.sh as root) a missing lab fails."""
    try:
        return get_kvm_lab().require()
    except LabUnavailable as e:
        lab_unavailable(e, "nested KVM lab", REQUIRE_KVM_ENV)


def tool_unavailable(reason: str) -> None:
    """A program a test needs is missing (``openssl`` for the TLS certificates, libvirt
    for ``virsh save``/``restore``): skip, or fail with ``MIGPROXY_REQUIRE_TOOLS`` set
    (scripts/test.sh installs them as root)."""
    if os.environ.get("MIGPROXY_REQUIRE_TOOLS"):
        pytest.fail(f"{reason} (MIGPROXY_REQUIRE_TOOLS is set)")
    pytest.skip(reason)


tls_unavailable = tool_unavailable  # the TLS tests' name for it
