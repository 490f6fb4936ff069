"""``migproxy manifest``: make destination manifests (:mod:`migproxy.arm.manifest`).

``capture`` starts the QEMU binary given, paused before the first instruction (``-S``), with
no guest, no disks and no default devices, talks QMP to it over its standard input and
output, migrates its state to a TCP port on the loopback interface that this process
listens on (so a binary in a chroot works the same), frames what arrives and writes the
manifest. ``from-stream`` does the same from a stream saved before.

Under KVM (``--accel kvm``, ``-cpu host``) the manifest also records the host: ``capture``
takes the running kernel's release (``uname -r``) and the CPU's MIDR_EL1 from sysfs, since
it runs on the host it describes; ``from-stream`` takes them from the caller
(``--kernel``, ``--host-cpu``), and the host CPU defaults to the stream's own MIDR_EL1,
which KVM lists with ``-cpu host``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from migproxy.arm.manifest import Manifest, ManifestError, manifest_from_engine
from migproxy.arm.rewriter import arm_engine_config
from migproxy.stream.engine import Policy, StreamEngine
from migproxy.tools.offline import run_file
from migproxy.tools.qmp import QMPClient, QMPConnectionError, QMPError

CAPTURE_TIMEOUT = 60.0  # seconds for QEMU to start, save its state and quit
MAX_CAPTURE = 1 << 30  # bytes: a paused guest with the default RAM sends a few MiB


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MIDR_SYSFS = "/sys/devices/system/cpu/cpu0/regs/identification/midr_el1"
MIDR_EL1 = 0x603000000013C000  # KVM id of MIDR_EL1 (op0 3, op1 0, CRn 0, CRm 0, op2 0)


def local_kvm_host(midr_path: str = MIDR_SYSFS) -> tuple[str, str]:
    """(kernel release, host CPU name) of this machine, for a manifest captured here."""
    try:
        midr = int(Path(midr_path).read_text(encoding="ascii").strip(), 16)
        cpu = f"midr-0x{midr:x}"
    except (OSError, ValueError):
        cpu = ""
    return os.uname().release, cpu


def stream_host_cpu(engine: StreamEngine) -> str:
    """``midr-0x...`` from the first cpu section's MIDR_EL1, or "" if it has none (TCG)."""
    from migproxy.arm.events import seen_cpus

    cpus = seen_cpus(engine.reports)
    if not cpus:
        return ""
    regs = dict(zip(cpus[0].indexes, cpus[0].values, strict=True))
    return f"midr-0x{regs[MIDR_EL1]:x}" if MIDR_EL1 in regs else ""


def manifest_from_stream(path: str | os.PathLike[str], *, cpu: str, qemu: str,
                         version_line: str = "", accel: str = "tcg", kernel: str = "",
                         host_cpu: str = "") -> Manifest:
    if accel != "kvm" and (kernel or host_cpu):
        raise ManifestError("--kernel and --host-cpu describe a KVM host: give --accel kvm")
    run = run_file(path)
    if not run.complete:
        stop = run.stop
        why = f"{stop.reason}: {stop.message}" if stop else "incomplete stream"
        raise ManifestError(f"{path}: the stream was not understood ({why})")
    made = {"by": "migproxy manifest from-stream", "stream": os.path.basename(str(path)),
            "date": _now()}
    if accel == "kvm" and not host_cpu:
        host_cpu = stream_host_cpu(run.engine)
    return manifest_from_engine(run.engine, cpu=cpu, qemu=qemu, version_line=version_line,
                                accel=accel, kernel=kernel, host_cpu=host_cpu, made=made)


@contextlib.contextmanager
def _qmp_errors() -> Iterator[None]:
    """QMP failures as the manifest errors ``capture`` reports."""
    try:
        yield
    except TimeoutError:
        raise ManifestError("QEMU did not answer on QMP in time") from None
    except QMPConnectionError:
        raise ManifestError("QEMU closed QMP (it exited)") from None
    except QMPError as e:
        raise ManifestError(f"QMP {e.command}: {e.desc or e.error}") from None


def version_line(qemu: Sequence[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run([*qemu, "--version"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, **(env or {})}, check=False)
    return out.stdout.splitlines()[0].strip() if out.stdout else ""


def upstream_version(line: str) -> str:
    """``QEMU emulator version 10.0.2 (Debian ...)`` -> ``10.0.2``."""
    words = line.split()
    if "version" in words and words.index("version") + 1 < len(words):
        return words[words.index("version") + 1]
    raise ManifestError(f"cannot read a version from {line!r}")


def capture(qemu: Sequence[str], *, machine: str, cpu: str, smp: int = 1,
            accel: str = "tcg", env: dict[str, str] | None = None,
            timeout: float = CAPTURE_TIMEOUT, host_cpu: str = "") -> Manifest:
    """Start ``qemu`` (a command: a binary, or e.g. ``chroot ROOT BINARY``) paused, save
    its state and return its manifest. Under KVM the manifest names this host's kernel and
    CPU (``host_cpu`` overrides the name taken from MIDR_EL1)."""
    line = version_line(qemu, env)
    qemu_version = upstream_version(line)
    deadline = time.monotonic() + timeout
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    argv = [*qemu, "-M", machine, "-cpu", cpu, "-smp", str(smp), "-accel", accel, "-S",
            "-nodefaults", "-display", "none", "-serial", "none", "-monitor", "none",
            "-qmp", "stdio"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    engine = StreamEngine(arm_engine_config(None, policy=Policy.ABORT))
    try:
        try:
            assert proc.stdin is not None
            assert proc.stdout is not None
            with _qmp_errors():
                qmp = QMPClient.over_pipes(proc.stdin, proc.stdout, _left(deadline))
                qmp.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"},
                            timeout=_left(deadline))
            listener.settimeout(max(0.1, deadline - time.monotonic()))
            conn, _peer = listener.accept()
        except (ManifestError, OSError) as e:
            err = os.read(proc.stderr.fileno(), 4096).decode(errors="replace").strip() \
                if proc.stderr is not None and proc.poll() is not None else ""
            raise ManifestError(f"{shlex.join(argv)}: {e}" + (f"; {err}" if err else "")) \
                from None
        received = 0
        with conn:
            while True:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                b = conn.recv(1 << 20)
                if not b:
                    break
                received += len(b)
                if received > MAX_CAPTURE:
                    raise ManifestError(f"more than {MAX_CAPTURE} bytes of state: not a "
                                        "paused guest without RAM content?")
                engine.feed(b)
        engine.feed_eof()
        with _qmp_errors():
            qmp.execute("quit", timeout=_left(deadline))
    finally:
        listener.close()
        if proc.poll() is None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    made = {"by": "migproxy manifest capture", "command": argv, "date": _now(),
            "bytes": received}
    kernel = ""
    if accel == "kvm":
        kernel, local_cpu = local_kvm_host()
        host_cpu = host_cpu or local_cpu or stream_host_cpu(engine)
    return manifest_from_engine(engine, cpu=cpu, qemu=qemu_version, version_line=line,
                                accel=accel, kernel=kernel, host_cpu=host_cpu, made=made)


def write_manifest(m: Manifest, path: str | os.PathLike[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(m.dumps(), encoding="utf-8")
    os.replace(tmp, p)
