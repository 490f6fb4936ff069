"""The nested KVM lab: real arm64 KVM inside the host's QEMU TCG.

``scripts/kvm-lab-setup.sh`` (root) prepares Debian arm64 kernels and one initramfs holding
Debian's arm64 QEMU 7.2 (at /) and 10.0 (at /trixie, run through chroot), and describes
them in ``$LAB_DIR/kvm/kvm-lab.json``.  The harness boots a kernel as a *nested host* (L1)
under the host's QEMU with ``-M virt,virtualization=on`` (L0, TCG); inside it a script of
``kvm_l1/`` runs the tick guest (L2) with ``-accel kvm -cpu host``.  The host and L1 talk
through files in a 9p share; L1 powers off when its script ends.  Every wait has a cap.

Typical use in a test::

    kvm = require_kvm_lab()                  # testkit/labs.py: skip, or fail
    saved = kvm.save_streams("6.12", "max")
    out = kvm.load_streams("6.1", "max", [LoadItem.of(saved.streams["7.2"])])
    assert not out[0].loaded                 # 6.12 lists more cpregs than 6.1 accepts

Stdlib only; booting needs no root, but the run directories live below the lab.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .lab import DEFAULT_LAB_DIR, LabUnavailable, free_port, read_description
from .qemu import last_counter, parse_ticks

KVM_SETUP_HINT = "run `sudo scripts/kvm-lab-setup.sh` (as root) to set up the nested KVM lab"

L0_QEMU = "/usr/bin/qemu-system-aarch64"
L0_MACHINE = "virt,virtualization=on,gic-version=3"
L1_SMP = 2
L1_MEMORY = "3G"
L1_APPEND = "console=ttyAMA0 rdinit=/init panic=-1 loglevel=6"

# Host CPU models for L1.  QEMU's pointer authentication (QARMA5) is slow under TCG: "max"
# runs with the implementation-defined algorithm (the guest sees "IMP DEF" pauth).
HOST_CPUS = {"max": "max,pauth-impdef=on", "neoverse-n1": "neoverse-n1"}

SLIRP_HOST = "10.0.2.2"
"""The L0 host as an L1 with QEMU user networking sees it (connections reach 127.0.0.1)."""
L2_PORT = 4444
"""Where a destination L2 listens inside its L1 (the host forwards a free port to it)."""

TICKS = 3
"""A source is stopped or migrated once its guest printed ``tick 3``."""
TICKS_AFTER = 3
"""A destination is watched until it printed 3 more ticks after ``cont`` (or a cap)."""

# Caps of the waits inside L1 (seconds of L1 uptime).
TICK_SECS = 120  # from L2 start to tick 3 (2-4 s; 14 s on the 7.3 kernel)
AFTER_SECS = 30  # for more ticks from a running L2 (one every 0.3 s)
MIGRATION_SECS = 120  # for a migration to end (1-3 s)
LOAD_SECS = 120  # for an offline load to end


class KvmLabError(Exception):
    """A nested host or its L2 did not behave as the harness expected."""


@dataclass(frozen=True)
class KvmKernel:
    """One L1 kernel of the lab (kvm-lab.json ``kernels``)."""

    key: str
    """Lab key: "6.1", "6.12" or "bpo" (the newest trixie-backports kernel)."""
    suite: str
    release: str
    """``uname -r`` of the kernel, e.g. "6.1.0-57-arm64"."""
    package: str
    version: str
    """Debian package version, e.g. "6.1.192-3"."""
    vmlinuz: Path
    modules_cpio: Path


@dataclass(frozen=True)
class KvmQemu:
    """One arm64 QEMU inside the initramfs (kvm-lab.json ``qemu``)."""

    key: str
    """Lab key: "7.2" or "10.0"."""
    version: str
    version_line: str
    package_version: str
    argv: tuple[str, ...]
    """Command inside L1 (may start with chroot /trixie); its words contain no spaces."""


def host_cpu_arg(host_cpu: str) -> str:
    """The ``-cpu`` argument of L0 for a host CPU name ("max" gets pauth-impdef=on)."""
    return HOST_CPUS.get(host_cpu, host_cpu)


def _l1_file(name: str) -> str:
    return (resources.files(__package__) / "kvm_l1" / name).read_text()


def l1_script(task: str, params: Mapping[str, str | int]) -> str:
    """The /mnt/run.sh of a nested host: ``params`` as shell assignments, the helpers of
    ``kvm_l1/lib.sh``, then the task script ``kvm_l1/TASK``."""
    header = "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in params.items())
    return f"# run.sh written by migproxy.lab.kvm ({task})\n{header}{_l1_file('lib.sh')}" \
        f"{_l1_file(task)}"


def read_results(path: Path) -> dict[str, str]:
    """The key=value lines of an L1 result file (later lines win; {} if it is missing)."""
    out: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key] = value
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, *, alive: Sequence[NestedHost] = (),
               poll: float = 0.2) -> bool:
    """Poll ``predicate`` until it holds (True), ``timeout`` seconds pass or one of
    ``alive`` has powered off (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline or not all(h.alive() for h in alive):
            return predicate()
        time.sleep(poll)


class NestedHost:
    """One boot of an L1 kernel under L0 TCG, running one ``kvm_l1`` task script.

    Its run directory (below the lab's ``runs``) holds ``serial.log`` (the L1 console),
    ``l0.log`` (L0's own output) and ``share/``, the 9p share that L1 sees at /mnt (run.sh,
    its files, run.log and the results).  The directory is kept for inspection; the
    concatenated initrd is deleted when the boot ends.
    """

    def __init__(self, lab: KvmLab, kernel: KvmKernel, host_cpu: str, script: str, *,
                 name: str, files: Mapping[str, Path] | None = None,
                 extra_args: Sequence[str] = (), timeout: float = 600.0) -> None:
        self.lab = lab
        self.kernel = kernel
        self.host_cpu = host_cpu
        self.timeout = timeout
        self.extra_args = tuple(extra_args)
        lab.runs_dir.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-{kernel.key}-{host_cpu}")
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=lab.runs_dir))
        self.share = self.run_dir / "share"
        self.share.mkdir()
        self.serial_path = self.run_dir / "serial.log"
        self.initrd = self.run_dir / "initrd.cpio"
        (self.share / "run.sh").write_text(script)
        for dest, src in (files or {}).items():
            shutil.copyfile(src, self.share / dest)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.wall = 0.0
        self.timed_out = False

    @property
    def argv(self) -> list[str]:
        return [
            *self.lab.l0,
            "-M", L0_MACHINE,
            "-cpu", host_cpu_arg(self.host_cpu),
            "-smp", str(L1_SMP), "-m", L1_MEMORY, "-accel", "tcg,thread=multi",
            "-nographic", "-nodefaults", "-no-user-config", "-no-reboot",
            "-serial", f"file:{self.serial_path}",
            "-kernel", str(self.kernel.vmlinuz), "-initrd", str(self.initrd),
            "-append", L1_APPEND,
            "-fsdev", f"local,id=fs0,path={self.share},security_model=none",
            "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=share",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> NestedHost:
        if self.proc is not None:
            raise KvmLabError("already started")
        with open(self.initrd, "wb") as out:
            for part in (self.lab.base_initramfs, self.kernel.modules_cpio):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        (self.run_dir / "cmdline").write_text(shlex.join(self.argv) + "\n")
        with open(self.run_dir / "l0.log", "wb") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for L1 to power off, at most ``timeout`` seconds (default: what is left of
        the boot's own cap); past the boot's cap L0 is killed.  The exit code, or None."""
        if self.proc is None:
            raise KvmLabError("not started")
        left = self.timeout - (time.monotonic() - self.started_at)
        limit = left if timeout is None else min(timeout, left)
        try:
            self.proc.wait(max(0.0, limit))
        except subprocess.TimeoutExpired:
            if limit >= left:
                self.timed_out = True
                self.kill()
        return self._ended()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._ended()

    def _ended(self) -> int | None:
        code = None if self.proc is None else self.proc.poll()
        if code is not None and not self.wall:
            self.wall = time.monotonic() - self.started_at
            self.initrd.unlink(missing_ok=True)
        return code

    def run(self) -> NestedHost:
        """Boot, wait until L1 powers off (or the cap: KvmLabError)."""
        self.start()
        try:
            self.wait()
        finally:
            self.kill()
        if self.timed_out:
            raise KvmLabError(f"{self}: no power-off within {self.timeout:.0f} s; "
                              f"{self.tail()}")
        return self

    # -- the share -------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return (self.share / name).exists()

    def put(self, name: str, text: str) -> None:
        """Write a file into the share at once (L1 never sees half of it)."""
        tmp = self.share / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(self.share / name)

    def text(self, name: str) -> str:
        try:
            return (self.share / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def results(self, name: str) -> dict[str, str]:
        return read_results(self.share / f"{name}.result")

    def facts(self) -> dict[str, str]:
        """What L1 said about itself: release, midr, kvm (yes/no)."""
        return self.results("l1")

    def tail(self, chars: int = 1500) -> str:
        """The ends of run.log and the L1 console, for error messages."""
        try:
            serial = self.serial_path.read_text(errors="replace")
        except FileNotFoundError:
            serial = ""
        return f"run.log: {self.text('run.log')[-chars:]!r}; console: {serial[-chars:]!r}"

    def __repr__(self) -> str:
        return f"<NestedHost {self.kernel.key} {self.host_cpu} {self.run_dir}>"


@dataclass(frozen=True)
class KvmStream:
    """A migration stream an L2 saved under KVM on a nested host."""

    path: Path
    qemu: str
    """Lab key of the QEMU that saved it ("7.2" or "10.0")."""
    qemu_version_line: str
    kernel: str
    release: str
    host_cpu: str
    last_tick: int
    """The guest counter when the source stopped (a correct load prints last_tick + 1)."""


@dataclass
class SavedStreams:
    """One save boot: a stream per QEMU, and what the nested host said about itself."""

    kernel: KvmKernel
    host_cpu: str
    release: str
    midr: str
    streams: dict[str, KvmStream]
    version_lines: dict[str, str]
    host: NestedHost

    @property
    def wall(self) -> float:
        return self.host.wall


@dataclass(frozen=True)
class LoadItem:
    """A stream to load on a nested host, with the QEMU that loads it."""

    stream: Path
    qemu: str
    last_tick: int | None = None
    """The source's last counter (from the save); the load should go on at last_tick + 1."""
    name: str = ""

    @classmethod
    def of(cls, stream: KvmStream, qemu: str | None = None, name: str = "") -> LoadItem:
        """A saved stream, loaded by ``qemu`` (default: the QEMU that saved it)."""
        return cls(stream.path, qemu or stream.qemu, stream.last_tick,
                   name or f"{stream.kernel}-{stream.qemu}-to-{qemu or stream.qemu}")


@dataclass
class L2Outcome:
    """What a destination L2 did: the load, then ``cont`` and the ticks."""

    load_status: str
    """VM status when the incoming migration ended ("paused", ...), or "exited", "failed"
    (QEMU said so and stayed), "timeout", "aborted" (the host gave up waiting)."""
    status_after_cont: str
    ticks: list[int]
    """Complete tick lines after cont."""
    error: str
    """QEMU's stderr."""

    @property
    def loaded(self) -> bool:
        return self.load_status not in ("exited", "failed", "timeout", "aborted", "")

    @property
    def first_tick(self) -> int | None:
        return self.ticks[0] if self.ticks else None

    @property
    def running(self) -> bool:
        """Loaded, running after cont, and ticking."""
        return self.loaded and self.status_after_cont == "running" and bool(self.ticks)


@dataclass
class LoadOutcome(L2Outcome):
    """One item of :meth:`KvmLab.load_streams`."""

    item: LoadItem = field(default_factory=lambda: LoadItem(Path(), ""))

    @property
    def expected_tick(self) -> int | None:
        return None if self.item.last_tick is None else self.item.last_tick + 1

    @property
    def ok(self) -> bool:
        """Loaded, running, and the guest went on where the source stopped (when known)."""
        expected = self.expected_tick
        return self.running and (expected is None or self.first_tick == expected)


@dataclass
class LiveResult:
    """One live migration attempt between two nested hosts."""

    source_migration: str
    """The source's final ``Migration status`` ("completed", "failed", ...)."""
    source_vm_status: str
    """``info status`` of the source right after: "running", "paused (postmigrate)", ..."""
    source_ticks_after: bool
    """The source guest printed more ticks after the attempt (it runs)."""
    source_last_tick: int | None
    source_info_migrate: str
    source_error: str
    destination: L2Outcome
    uri: str
    source_host: NestedHost
    destination_host: NestedHost
    postcopy_from: str = ""
    """With ``postcopy``: the source's status when postcopy was started ("active")."""

    @property
    def source_running(self) -> bool:
        return self.source_vm_status == "running" and self.source_ticks_after

    @property
    def wall(self) -> float:
        return max(self.source_host.wall, self.destination_host.wall)


def _outcome(host: NestedHost, name: str) -> L2Outcome:
    res = host.results(name)
    return L2Outcome(
        load_status=res.get("load_status", ""),
        status_after_cont=res.get("status_after_cont", ""),
        ticks=parse_ticks(host.text(f"{name}.serial")),
        error=host.text(f"{name}.err").strip(),
    )


class KvmLab:
    """The installed nested KVM lab.  ``KvmLab.load()`` never raises; check
    :meth:`available` (or :meth:`require`)."""

    def __init__(self, kvm_dir: Path, desc: dict[str, Any] | None, reason: str | None) -> None:
        self.kvm_dir = kvm_dir
        self.desc = desc or {}
        l0 = self.desc.get("l0", {})
        self.l0: tuple[str, ...] = tuple(l0.get("argv", (L0_QEMU,)))
        """The command of L0 (the host's QEMU, TCG)."""
        self.l0_version_line: str = l0.get("version_line", "")
        self.runs_dir = Path(self.desc.get("runs_dir", kvm_dir / "runs"))
        self.base_initramfs = Path(self.desc.get("base_initramfs", kvm_dir / "base.cpio"))
        self.kernels: dict[str, KvmKernel] = {}
        self.qemus: dict[str, KvmQemu] = {}
        self._reason = reason
        try:
            for key, k in self.desc.get("kernels", {}).items():
                self.kernels[key] = KvmKernel(
                    key=key, suite=k["suite"], release=k["release"], package=k["package"],
                    version=k["version"], vmlinuz=Path(k["vmlinuz"]),
                    modules_cpio=Path(k["modules_cpio"]),
                )
            for key, q in self.desc.get("qemu", {}).items():
                self.qemus[key] = KvmQemu(
                    key=key, version=q["version"], version_line=q["version_line"],
                    package_version=q.get("package_version", ""), argv=tuple(q["argv"]),
                )
        except (KeyError, TypeError) as exc:
            self._reason = self._reason or f"{kvm_dir}/kvm-lab.json is malformed ({exc!r}): " \
                f"{KVM_SETUP_HINT}"
        if self._reason is None:
            self._reason = self._check()

    @classmethod
    def load(cls, lab_dir: str | os.PathLike[str] | None = None) -> KvmLab:
        d = Path(lab_dir or os.environ.get("LAB_DIR") or DEFAULT_LAB_DIR) / "kvm"
        return cls(d, *read_description(d / "kvm-lab.json", KVM_SETUP_HINT))

    def _check(self) -> str | None:
        if not self.kernels or not self.qemus:
            return f"{self.kvm_dir}/kvm-lab.json lists no kernels or QEMUs: {KVM_SETUP_HINT}"
        files = [self.base_initramfs]
        for k in self.kernels.values():
            files += [k.vmlinuz, k.modules_cpio]
        for f in files:
            if not f.is_file():
                return f"{f} missing: {KVM_SETUP_HINT}"
        if shutil.which(self.l0[0]) is None:
            return f"the L0 QEMU {self.l0[0]} is missing: run `sudo scripts/lab-setup.sh`"
        if not os.access(self.runs_dir, os.W_OK):
            return f"cannot write to {self.runs_dir}: {KVM_SETUP_HINT}"
        return None

    def available(self) -> bool:
        return self._reason is None

    def unavailable_reason(self) -> str | None:
        return self._reason

    def require(self) -> KvmLab:
        """This lab, or :class:`LabUnavailable` with the reason (``require_kvm_lab`` of
        testkit/labs.py turns it into a skip, or a failure under
        ``MIGPROXY_REQUIRE_KVM_LAB=1``)."""
        if self._reason is not None:
            raise LabUnavailable(self._reason)
        return self

    def kernel(self, key: str) -> KvmKernel:
        """A kernel by lab key ("6.1") or by release ("6.1.0-57-arm64")."""
        found = self.kernels.get(key) or next(
            (k for k in self.kernels.values() if k.release == key), None)
        if found is None:
            raise LabUnavailable(f"kernel {key} is not in the KVM lab "
                                 f"(have {sorted(self.kernels)})")
        return found

    def qemu(self, key: str) -> KvmQemu:
        if key in self.qemus:
            return self.qemus[key]
        raise LabUnavailable(f"QEMU {key} is not in the KVM lab (have {sorted(self.qemus)})")

    # -- nested hosts --------------------------------------------------------------------
    def host(self, kernel: str, host_cpu: str, task: str, params: Mapping[str, str | int], *,
             name: str, files: Mapping[str, Path] | None = None,
             extra_args: Sequence[str] = (), timeout: float = 600.0) -> NestedHost:
        """A not yet started nested host that runs ``kvm_l1/TASK`` with ``params``."""
        self.require()
        return NestedHost(self, self.kernel(kernel), host_cpu, l1_script(task, params),
                          name=name, files=files, extra_args=extra_args, timeout=timeout)

    def _job(self, qemu: str) -> str:
        return " ".join(self.qemu(qemu).argv)

    def save_streams(self, kernel: str, host_cpu: str = "max",
                     qemus: Sequence[str] = ("7.2", "10.0"), *,
                     timeout: float = 600.0) -> SavedStreams:
        """One boot of ``kernel``: the tick guest under KVM on each QEMU of ``qemus``
        (-smp 1), stopped after ``tick 3`` and saved with ``migrate "exec:cat > FILE"``.
        Raises :class:`KvmLabError` when a stream could not be saved."""
        names = {q: "q" + q.replace(".", "") for q in qemus}
        jobs = "".join(f"{names[q]} {self._job(q)}\n" for q in qemus)
        host = self.host(kernel, host_cpu, "save.sh",
                         {"TICKS": TICKS, "TICK_SECS": TICK_SECS,
                          "MIGRATION_SECS": MIGRATION_SECS},
                         name="save", timeout=timeout)
        host.put("jobs", jobs)
        host.run()
        facts = host.facts()
        if facts.get("kvm") != "yes":
            raise KvmLabError(f"{host}: no /dev/kvm in L1 ({facts}); {host.tail()}")
        streams: dict[str, KvmStream] = {}
        lines: dict[str, str] = {}
        for q, n in names.items():
            res = host.results(n)
            lines[q] = res.get("version_line", "")
            path = host.share / f"{n}.mig"
            last = last_counter(host.text(f"{n}.serial.stop"))
            if res.get("migration") != "completed" or not path.is_file() or last is None:
                raise KvmLabError(f"{host}: QEMU {q} saved no stream ({res}); stderr "
                                  f"{host.text(f'{n}.err')[-1000:]!r}; {host.tail()}")
            streams[q] = KvmStream(path=path, qemu=q, qemu_version_line=lines[q],
                                   kernel=kernel, release=facts.get("release", ""),
                                   host_cpu=host_cpu, last_tick=last)
        return SavedStreams(kernel=self.kernel(kernel), host_cpu=host_cpu,
                            release=facts.get("release", ""), midr=facts.get("midr", ""),
                            streams=streams, version_lines=lines, host=host)

    def load_streams(self, kernel: str, host_cpu: str, items: Sequence[LoadItem], *,
                     timeout: float = 600.0) -> list[LoadOutcome]:
        """One boot of ``kernel`` that loads each item (``-S -incoming "exec:cat FILE"``),
        waits until the VM is no longer "inmigrate" or QEMU exits, then ``cont`` and
        collects the ticks.  One outcome per item, in order."""
        files = {f"in{i}.mig": item.stream for i, item in enumerate(items)}
        jobs = "".join(f"l{i} in{i}.mig {self._job(item.qemu)}\n" for i, item in enumerate(items))
        host = self.host(kernel, host_cpu, "load.sh",
                         {"LOAD_SECS": LOAD_SECS, "TICKS_AFTER": TICKS_AFTER,
                          "AFTER_SECS": AFTER_SECS},
                         name="load", files=files, timeout=timeout)
        host.put("jobs", jobs)
        host.run()
        out = []
        for i, item in enumerate(items):
            o = _outcome(host, f"l{i}")
            out.append(LoadOutcome(o.load_status, o.status_after_cont, o.ticks, o.error, item))
        return out

    def live_migrate(self, src_kernel: str, dst_kernel: str, host_cpu: str, qemu: str, *,
                     via: tuple[str, int] | None = None, dst_port: int | None = None,
                     return_path: bool = False, postcopy: bool = False,
                     dst_host_cpu: str | None = None,
                     boot_timeout: float = 300.0, timeout: float = 900.0) -> LiveResult:
        """Live-migrate the tick guest between two nested hosts running at once.

        The destination L1 forwards ``127.0.0.1:dst_port`` of this host (a free port when
        None) to its L2, which listens with ``-incoming defer``.  The source L2 migrates to
        ``tcp:10.0.2.2:dst_port`` (this host as the source's user network sees it), or,
        with ``via=(host, port)``, to ``10.0.2.2:port``: there the caller runs a migproxy
        daemon that listens on ``host:port`` (loopback) and targets ``127.0.0.1:dst_port``
        (so pass ``dst_port`` too).  ``return_path`` sets that capability on both L2s;
        ``postcopy`` sets ``postcopy-ram`` on both, caps the source's bandwidth at 64 KiB/s
        and sends ``migrate_start_postcopy`` as soon as the migration is active.
        The source is left as the attempt left it and reported so."""
        if via is not None:
            if dst_port is None:
                raise ValueError("with via, pass the dst_port the proxy targets")
            if via[0] not in ("127.0.0.1", "localhost"):
                raise ValueError(f"the source reaches this host's loopback only, not {via[0]}")
        dport = dst_port if dst_port is not None else free_port()
        uri = f"tcp:{SLIRP_HOST}:{via[1] if via is not None else dport}"
        common: dict[str, str | int] = {
            "QEMU": self._job(qemu), "RETURN_PATH": int(return_path),
            "POSTCOPY": int(postcopy), "TICKS": TICKS,
            "TICK_SECS": TICK_SECS, "TICKS_AFTER": TICKS_AFTER, "AFTER_SECS": AFTER_SECS,
        }
        dst = self.host(dst_kernel, dst_host_cpu or host_cpu, "migrate-dst.sh",
                        {**common, "PORT": L2_PORT, "LOAD_SECS": int(timeout)},
                        name="live-dst", timeout=timeout, extra_args=(
                            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{dport}-:{L2_PORT}",
                            "-device", "virtio-net-pci,netdev=n0,romfile="))
        src = self.host(src_kernel, host_cpu, "migrate-src.sh",
                        {**common, "GO_SECS": int(boot_timeout), "MIGRATION_SECS": MIGRATION_SECS},
                        name="live-src", timeout=timeout, extra_args=(
                            "-netdev", "user,id=n0",
                            "-device", "virtio-net-pci,netdev=n0,romfile="))
        with contextlib.ExitStack() as stack:
            for h in (dst, src):
                stack.callback(h.kill)
                h.start()
            both = (dst, src)
            if not wait_until(lambda: dst.has("ready") and src.has("ticking"), boot_timeout,
                              alive=both):
                for h in both:
                    h.put("abort", "")
                raise KvmLabError(f"nested hosts not ready in {boot_timeout:.0f} s: "
                                  f"destination {dst.tail()}; source {src.tail()}")
            src.put("go", uri)
            wait_until(lambda: src.has("done"), MIGRATION_SECS + AFTER_SECS + 60, alive=(src,))
            # A destination that got a whole stream ends by itself; one that the source
            # never reached (a failed or refused migration) waits for the abort.
            completed = src.results("src").get("migration", "").startswith("completed")
            if not wait_until(lambda: dst.has("done"), 60 if completed else 15, alive=(dst,)):
                dst.put("abort", "")
            for h in both:
                h.wait()
        res = src.results("src")
        if "migration" not in res:
            raise KvmLabError(f"the source did not migrate ({res}); {src.tail()}")
        return LiveResult(
            source_migration=res["migration"],
            source_vm_status=res.get("vm_status", ""),
            source_ticks_after=res.get("ticks_after") == "yes",
            source_last_tick=last_counter(src.text("src.serial.migrated")),
            source_info_migrate=src.text("src.info-migrate"),
            source_error=src.text("src.err").strip(),
            destination=_outcome(dst, "dst"),
            uri=uri,
            source_host=src,
            destination_host=dst,
            postcopy_from=res.get("postcopy_from", ""),
        )


_KVM_LAB: KvmLab | None = None


def get_kvm_lab() -> KvmLab:
    """The nested KVM lab of this process (loaded once)."""
    global _KVM_LAB
    if _KVM_LAB is None:
        _KVM_LAB = KvmLab.load()
    return _KVM_LAB
