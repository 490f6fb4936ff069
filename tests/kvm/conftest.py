"""Fixtures of the nested KVM lab tests: the lab, and the streams saved on each (kernel,
host CPU) -- one L1 boot each per test session, shared by every test that asks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from migproxy.lab.kvm import KvmLab, SavedStreams
from testkit.labs import require_kvm_lab
from tests.kvm.kernel_matrix import Saves

SaveStreams = Callable[..., SavedStreams]


@pytest.fixture(scope="session")
def kvm_lab() -> KvmLab:
    return require_kvm_lab()


@pytest.fixture(scope="session")
def kvm_saves(kvm_lab: KvmLab) -> SaveStreams:
    """``kvm_saves(kernel, host_cpu="max")``: the streams QEMU 7.2 and 10.0 saved under KVM
    on that nested host, saved on the first call of the session."""
    cache: dict[tuple[str, str], SavedStreams] = {}

    def save(kernel: str, host_cpu: str = "max") -> SavedStreams:
        key = (kernel, host_cpu)
        if key not in cache:
            cache[key] = kvm_lab.save_streams(kernel, host_cpu)
        return cache[key]

    return save


@pytest.fixture(scope="session")
def saves(kvm_lab: KvmLab, kvm_saves: SaveStreams,
          tmp_path_factory: pytest.TempPathFactory) -> Saves:
    """The saved streams with the destination manifests made from them."""
    return Saves(kvm_lab, tmp_path_factory.mktemp("kvm-manifests"), kvm_saves)
