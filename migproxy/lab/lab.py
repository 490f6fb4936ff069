"""The QEMU lab: binaries described by $LAB_DIR/lab.json (see scripts/lab-setup.sh)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .qemu import Qemu, QemuError, QemuExited, QemuVersion

DEFAULT_LAB_DIR = "/var/cache/migproxy-lab"
SETUP_HINT = "run `sudo scripts/lab-setup.sh` (as root) to set up the QEMU lab"


class LabUnavailable(Exception):
    """The lab (or a requested version of it) cannot be used here."""


@dataclass
class LoadResult:
    """Outcome of loading a stream into a destination QEMU."""

    ok: bool
    """The load completed and the guest's first tick was expect_after + 1."""
    loaded: bool
    """The incoming migration completed (whatever the guest did afterwards)."""
    error: str
    """Why not ok: QEMU's stderr for a failed load, else a short description."""
    first_tick: int | None
    expected_tick: int
    status: str
    """Final query-migrate status on the destination ("completed"/"failed")."""
    returncode: int | None
    """Exit code if QEMU exited (a failed load exits with 1), else None."""
    info: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0
    """Time from process start to the end of the incoming migration."""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Stream:
    """A saved migration stream and what the source guest printed last."""

    path: Path
    version: str
    """Exact QEMU version that saved it."""
    machine: str
    cpu: str
    smp: int
    last_tick: int
    """The guest counter when the source stopped; the destination prints last_tick + 1."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


PORT_RANGE_ATTEMPTS = 100  # tries of free_port_range before it gives up


def free_port_range(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive TCP ports that were all free a moment ago (for a
    port-range route); RuntimeError after PORT_RANGE_ATTEMPTS tries."""
    for _ in range(PORT_RANGE_ATTEMPTS):
        first = free_port(host)
        if first + count > 65536:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host} in "
                       f"{PORT_RANGE_ATTEMPTS} tries")


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


def read_description(path: Path, hint: str) -> tuple[dict[str, Any] | None, str | None]:
    """A lab's JSON description and None, or None and why it cannot be read (``hint``
    says how to set the lab up)."""
    try:
        desc: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} not found: {hint}"
    except (OSError, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"
    return desc, None


def stream_name(version: str, machine: str, cpu: str, smp: int) -> str:
    """File name of a reference stream, e.g. ``v10.0.2-virt-10.0-cortex-a57-smp1.mig``."""
    return f"v{version}-{machine}-{cpu}-smp{smp}.mig"


class Lab:
    """The installed QEMU lab.  ``Lab.load()`` never raises; check :meth:`available`."""

    def __init__(self, lab_dir: Path, desc: dict[str, Any] | None, reason: str | None) -> None:
        self.lab_dir = lab_dir
        self.desc = desc or {}
        self._reason = reason
        self.versions: dict[str, QemuVersion] = {}
        for key, ent in self.desc.get("qemu", {}).items():
            self.versions[key] = QemuVersion(
                key=key,
                version=ent["version"],
                version_line=ent.get("version_line", ""),
                argv=tuple(ent["argv"]),
                env=dict(ent.get("env", {})),
                chroot=ent.get("chroot"),
            )
        self.work_dir = Path(self.desc.get("work_dir", lab_dir / "work"))
        self.kernel = str(self.desc.get("kernel", lab_dir / "tick.bin"))
        self.root: str | None = self.desc.get("root")
        self.shared_dirs = [Path(p) for p in self.desc.get("shared_dirs", [self.work_dir])]
        self.runs_dir = self.work_dir / "runs"
        self.streams_dir = self.work_dir / "streams"
        if self._reason is None:
            self._reason = self._check()

    # -- loading and availability ----------------------------------------------
    @classmethod
    def load(cls, lab_dir: str | os.PathLike[str] | None = None) -> Lab:
        d = Path(lab_dir or os.environ.get("LAB_DIR") or DEFAULT_LAB_DIR)
        return cls(d, *read_description(d / "lab.json", SETUP_HINT))

    def _check(self) -> str | None:
        if not self.versions:
            return f"{self.lab_dir}/lab.json lists no QEMU versions: {SETUP_HINT}"
        if not os.path.isfile(self.kernel):
            return f"guest image {self.kernel} missing: {SETUP_HINT}"
        if not self.work_dir.is_dir():
            return f"work dir {self.work_dir} missing: {SETUP_HINT}"
        return None

    def _version_reason(self, v: QemuVersion) -> str | None:
        """Why a version cannot run here (chrooted ones need root and the mounts)."""
        if v.chroot is None:
            return None
        if os.geteuid() != 0:
            return f"QEMU {v.version} runs in a chroot and needs root"
        if not os.path.exists(os.path.join(v.chroot, "proc", "self")):
            return f"{v.chroot}/proc is not mounted: run `scripts/lab-setup.sh --mount`"
        for d in self.shared_dirs:
            inner = v.chroot + str(d)
            try:
                same = os.path.samefile(d, inner)
            except OSError:
                same = False
            if not same:
                return f"{d} is not bind-mounted at {inner}: run `scripts/lab-setup.sh --mount`"
        return None

    def unavailable_reason(self, *versions: str) -> str | None:
        """None if usable; else why.  Without arguments every version is checked."""
        if self._reason:
            return self._reason
        for key in versions or tuple(self.versions):
            try:
                reason = self._version_reason(self.version(key))
            except LabUnavailable as exc:
                reason = str(exc)
            if reason:
                return reason
        return None

    def require(self, *versions: str) -> Lab:
        """This lab, if it (and each version) can be used here; else raise
        :class:`LabUnavailable` with the reason (the tests turn it into a skip, or, with
        ``MIGPROXY_REQUIRE_LAB=1`` as in CI, a failure: see ``testkit/labs.py``)."""
        reason = self.unavailable_reason(*versions)
        if reason is not None:
            raise LabUnavailable(reason)
        return self

    def version(self, key: str) -> QemuVersion:
        """A version by lab key ("11.1") or exact version ("11.1.3")."""
        if key in self.versions:
            return self.versions[key]
        for v in self.versions.values():
            if v.version == key:
                return v
        raise LabUnavailable(f"QEMU {key} is not in the lab (have {sorted(self.versions)})")

    # -- paths ------------------------------------------------------------------
    def is_shared(self, path: str | os.PathLike[str]) -> bool:
        """True if ``path`` is the same file for host and chrooted QEMUs."""
        p = os.path.abspath(path)
        return any(p == str(d) or p.startswith(str(d) + os.sep) for d in self.shared_dirs)

    def visible_to(self, version: QemuVersion, path: str | os.PathLike[str]) -> bool:
        return version.chroot is None or self.is_shared(path)

    @contextlib.contextmanager
    def scratch_dir(self, prefix: str = "tmp-") -> Iterator[Path]:
        """A temporary directory below the shared work dir, removed afterwards."""
        base = self.work_dir / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    # -- processes --------------------------------------------------------------
    def qemu(
        self,
        version: str,
        *,
        machine: str | None = None,
        cpu: str = "cortex-a57",
        smp: int = 1,
        memory: str = "64M",
        incoming: str | None = None,
        paused: bool = False,
        extra_args: Sequence[str] = (),
        name: str = "vm",
        keep: bool = False,
    ) -> Qemu:
        """A not-yet-started :class:`Qemu` (use ``with lab.qemu(...) as q:`` to start)."""
        if self._reason:
            raise LabUnavailable(self._reason)
        return Qemu(
            self.version(version),
            kernel=self.kernel,
            run_root=self.runs_dir,
            machine=machine,
            cpu=cpu,
            smp=smp,
            memory=memory,
            incoming=incoming,
            paused=paused,
            extra_args=extra_args,
            name=name,
            keep=keep,
        )

    def source(
        self, version: str, *, min_ticks: int = 2, timeout: float = 30.0, **kwargs: Any
    ) -> Qemu:
        """Start a guest and wait until it printed ``min_ticks`` ticks.  Caller closes it."""
        q = self.qemu(version, name=kwargs.pop("name", "src"), **kwargs)
        try:
            q.start()
            q.wait_ticks(min_ticks, timeout)
        except BaseException:
            q.close(keep=True)
            raise
        return q

    def destination(
        self,
        version: str,
        uri: str,
        *,
        capabilities: Mapping[str, bool] | None = None,
        parameters: Mapping[str, Any] | None = None,
        paused: bool = False,
        **kwargs: Any,
    ) -> Qemu:
        """Start a destination with ``-incoming defer`` and listen on ``uri``.

        ``uri`` is e.g. ``f"tcp:127.0.0.1:{free_port()}"``; capabilities such
        as ``{"return-path": True, "multifd": True}`` and parameters are set
        before listening.  Chrooted versions share the host's network, so
        loopback TCP works across host and chroot.  Caller closes it.
        """
        q = self.qemu(
            version, incoming="defer", paused=paused, name=kwargs.pop("name", "dst"), **kwargs
        )
        try:
            q.start()
            q.migrate_incoming(uri, capabilities, parameters)
        except BaseException:
            q.close(keep=True)
            raise
        return q

    # -- offline streams ----------------------------------------------------------
    def save_stream(
        self,
        version: str,
        path: str | os.PathLike[str],
        machine: str = "virt-10.0",
        cpu: str = "cortex-a57",
        smp: int = 1,
        *,
        min_ticks: int = 2,
        capabilities: Mapping[str, bool] | None = None,
        parameters: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
    ) -> int:
        """Run the guest on ``version``, migrate it to ``exec:cat > path``.

        Returns the source guest's last counter N (the destination of a
        correct load prints ``tick N+1`` first).
        """
        v = self.version(version)
        final = Path(path).absolute()
        final.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            if self.visible_to(v, final):
                target = final.with_name(f".{final.name}.part{os.getpid()}")
            else:
                target = stack.enter_context(self.scratch_dir("save-")) / final.name
            with self.source(
                version,
                machine=machine,
                cpu=cpu,
                smp=smp,
                min_ticks=min_ticks,
                timeout=timeout,
                name="save",
            ) as q:
                q.migrate(f"exec:cat > {shlex.quote(str(target))}", capabilities, parameters)
                info = q.wait_migration(timeout)
                if info.get("status") != "completed":
                    raise QemuError(
                        f"saving a stream on {v.version} failed: {info}; "
                        f"stderr {q.stderr()[-1000:]!r}"
                    )
                n = q.last_counter()
                if n is None:
                    raise QemuError(f"{q!r}: no tick in the serial log")
            if not target.is_file() or target.stat().st_size == 0:
                raise QemuError(f"stream {target} was not written")
            shutil.move(str(target), final)
        return n

    def load_stream(
        self,
        version: str,
        path: str | os.PathLike[str],
        machine: str = "virt-10.0",
        cpu: str = "cortex-a57",
        smp: int = 1,
        expect_after: int = 0,
        *,
        timeout: float = 60.0,
        tick_timeout: float = 10.0,
    ) -> LoadResult:
        """Start ``version`` with ``-incoming 'exec:cat PATH'`` (paused), then cont.

        ``ok`` is True when the load completed and the guest's first complete
        line is ``tick expect_after+1``.  A failed load makes QEMU exit: its
        stderr is in ``error``.
        """
        v = self.version(version)
        src = Path(path).absolute()
        if not src.is_file():
            raise FileNotFoundError(src)
        expected = expect_after + 1
        with contextlib.ExitStack() as stack:
            if not self.visible_to(v, src):
                tmp = stack.enter_context(self.scratch_dir("load-")) / src.name
                shutil.copyfile(src, tmp)
                src = tmp
            q = self.qemu(
                version,
                machine=machine,
                cpu=cpu,
                smp=smp,
                paused=True,
                incoming=f"exec:cat {shlex.quote(str(src))}",
                name="load",
            )
            stack.callback(q.close)
            try:
                q.start(timeout=timeout)
            except QemuExited as exc:
                return LoadResult(
                    ok=False,
                    loaded=False,
                    error=exc.stderr.strip(),
                    first_tick=None,
                    expected_tick=expected,
                    status="failed",
                    returncode=exc.returncode,
                )
            info = q.wait_incoming(timeout)
            load_seconds = time.monotonic() - q.started_at
            if info.get("status") != "completed":
                return LoadResult(
                    ok=False,
                    loaded=False,
                    error=str(info.get("error-desc") or info),
                    first_tick=None,
                    expected_tick=expected,
                    status=str(info.get("status")),
                    returncode=info.get("returncode", q.returncode),
                    info=info,
                    load_seconds=load_seconds,
                )
            q.cont()
            try:
                first = q.wait_ticks(1, tick_timeout)[0]
            except (TimeoutError, QemuExited) as exc:
                return LoadResult(
                    ok=False,
                    loaded=True,
                    error=f"no tick after cont: {exc}",
                    first_tick=None,
                    expected_tick=expected,
                    status="completed",
                    returncode=q.returncode,
                    info=info,
                    load_seconds=load_seconds,
                )
            ok = first == expected
            return LoadResult(
                ok=ok,
                loaded=True,
                error="" if ok else f"first tick {first}, expected {expected}",
                first_tick=first,
                expected_tick=expected,
                status="completed",
                returncode=None,
                info=info,
                load_seconds=load_seconds,
            )

    def stream(
        self,
        version: str,
        machine: str | None = None,
        cpu: str = "cortex-a57",
        smp: int = 1,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Stream:
        """A stream saved by ``version``, cached (default ``$LAB_DIR/work/streams``).

        Safe to call from concurrent test processes (a lock file serialises
        the saving).  The cache key includes the exact QEMU version.
        """
        v = self.version(version)
        machine = machine or v.default_machine
        d = Path(cache_dir) if cache_dir is not None else self.streams_dir
        d.mkdir(parents=True, exist_ok=True)
        path = d / stream_name(v.version, machine, cpu, smp)
        meta_path = path.with_suffix(".json")
        with open(d / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            meta = _read_json(meta_path)
            if not (path.is_file() and meta and meta.get("version") == v.version):
                n = self.save_stream(v.key, path, machine, cpu, smp)
                meta = {
                    "version": v.version,
                    "version_line": v.version_line,
                    "machine": machine,
                    "cpu": cpu,
                    "smp": smp,
                    "last_tick": n,
                    "size": path.stat().st_size,
                }
                tmp = meta_path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(meta, indent=2) + "\n")
                tmp.replace(meta_path)
        return Stream(
            path=path,
            version=v.version,
            machine=machine,
            cpu=cpu,
            smp=smp,
            last_tick=int(meta["last_tick"]),
        )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


_LAB: Lab | None = None


def get_lab() -> Lab:
    """The lab of this process (loaded once)."""
    global _LAB
    if _LAB is None:
        _LAB = Lab.load()
    return _LAB
