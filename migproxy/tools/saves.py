"""libvirt's managed-save images, rewritten in place for the QEMU now installed.

``virsh managedsave`` and libvirt-guests (``ON_SHUTDOWN=suspend``) save a VM to
``/var/lib/libvirt/qemu/save/NAME.save``; ``virsh start NAME`` (and libvirt-guests at
boot) restores it and then deletes the file. After a QEMU or kernel upgrade the new QEMU
may refuse the image's ``cpu`` section. `rewrite_saves` rewrites every ``*.save`` in the
directory for a destination, before libvirt starts:

* ``NAME.save`` is planned first: nothing to change (an image already for this
  destination, as after a first run) leaves it as it is.
* Otherwise the rewrite goes to ``NAME.save.migproxy-new`` in the same directory, is
  fsynced, gets the original's owner, group, mode and times, and is renamed over
  ``NAME.save``; the original stays as ``NAME.save.migproxy-orig`` (a hard link: no copy).
* An image that cannot be rewritten honestly (refused, incomplete, unreadable) is named
  with the reason and left exactly as it was, as is its original.
* A ``NAME.save`` that is the rewrite of its kept original (same modification time, same
  header and XML area) and does not fit the destination (the host booted another kernel
  again) is made again from the original; if the original itself fits, it is put back.

`clean_saves` removes the kept originals whose ``NAME.save`` is gone: libvirt deletes a
managed-save image once it restored the VM from it (or ``virsh managedsave-remove``,
``virsh start --force-boot`` did). While ``NAME.save`` exists the original is kept.

Both take an exclusive lock (``flock``) on the directory, so two runs do not interleave.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from migproxy.arm.destination import Destination
from migproxy.arm.events import CpuReconciled, CpuRewritten
from migproxy.stream.errors import MigproxyError, UsageError
from migproxy.stream.events import Aborted, Event, PassthroughEntered
from migproxy.tools.offline import FileRun, rewrite_file, run_file
from migproxy.tools.saveimage import (
    MAGIC_PREFIX,
    SaveImageError,
    looks_like_save_image,
    read_save_image,
)

DEFAULT_SAVE_DIR = "/var/lib/libvirt/qemu/save"  # libvirt's qemu.conf save_dir
IMAGE_SUFFIX = ".save"
ORIGINAL_SUFFIX = ".migproxy-orig"  # NAME.save.migproxy-orig: the image as libvirt wrote it
NEW_SUFFIX = ".migproxy-new"  # NAME.save.migproxy-new: a rewrite being written
MAX_IMAGES = 1024  # images looked at in one run (libvirt has one per domain)
SPACE_MARGIN = 64 << 20  # free bytes left over after a rewrite of the source's size


class SavesLocked(UsageError):
    """Another ``migproxy saves`` run holds the directory."""


class OutOfTime(MigproxyError):
    """The run's time limit passed (raised from inside a rewrite, which then removes its
    partial output)."""


class _Refused(Exception):
    """This image is not rewritten (``detail`` says why)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Outcome(enum.Enum):
    REWRITTEN = "rewritten"
    UNCHANGED = "nothing to change"
    ORIGINAL_BACK = "original put back"
    REFUSED = "refused"
    SKIPPED = "skipped"

    @property
    def ok(self) -> bool:
        """Whether the image is ready for the destination."""
        return self not in (Outcome.REFUSED, Outcome.SKIPPED)


@dataclass(frozen=True)
class ImageResult:
    """What a run did with one ``NAME.save``; ``detail`` says why, ``changes`` what."""

    path: Path
    outcome: Outcome
    detail: str = ""
    changes: tuple[str, ...] = ()


class Clock:
    """The run's time limit (``None``: none). `check` raises `OutOfTime` once it passed."""

    def __init__(self, limit: float | None) -> None:
        self.deadline = None if limit is None else time.monotonic() + limit

    @property
    def passed(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def check(self, _data: object = None) -> None:
        if self.passed:
            raise OutOfTime("the time limit passed")


def original_of(image: Path) -> Path:
    return image.with_name(image.name + ORIGINAL_SUFFIX)


def _regular(path: Path) -> os.stat_result | None:
    """``path``'s status if it is a regular file (not followed if a symbolic link)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def image_paths(directory: Path) -> list[Path]:
    """The ``*.save`` names in ``directory``, sorted (hidden names left out)."""
    return sorted(p for p in directory.iterdir()
                  if p.name.endswith(IMAGE_SUFFIX) and not p.name.startswith("."))


def _head(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return read_save_image(f).head()
    except (OSError, SaveImageError):
        return None


def _check_image(path: Path) -> None:
    """`_Refused` unless ``path`` starts as a complete libvirt save image (its header and
    XML area; the stream is read by the plan)."""
    with path.open("rb") as f:
        head = f.read(len(MAGIC_PREFIX))
        if not looks_like_save_image(head):
            raise _Refused("not a libvirt save image")
        read_save_image(f, head)


def is_rewrite_of(image: Path, original: Path) -> bool:
    """Whether ``image`` is what a run made of ``original``: the same file, or one with its
    modification time and its header and XML area byte for byte. A new managed save of
    the domain is written later (a newer time)."""
    a, b = _regular(image), _regular(original)
    if a is None or b is None:
        return False
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    if a.st_mtime_ns != b.st_mtime_ns:
        return False
    head = _head(image)
    return head is not None and head == _head(original)


_KEPT = (CpuReconciled, CpuRewritten, PassthroughEntered, Aborted)


def _keep(e: Event) -> bool:
    return isinstance(e, _KEPT)


def planned_changes(run: FileRun) -> tuple[str, ...]:
    """The changes a run planned or made, one line each (empty: nothing to change)."""
    out: list[str] = []
    for e in run.events:
        if isinstance(e, CpuReconciled):
            out += [f"cpu {e.instance_id}: {c}" for c in e.changes]
        elif isinstance(e, CpuRewritten):
            out.append(f"cpu {e.instance_id}: {e.count_before} -> {e.count_after} cpregs")
    return tuple(out)


def refusal(run: FileRun) -> str:
    """Why a run did not get to the end of the stream."""
    stop = run.stop
    return "the stream is incomplete" if stop is None else f"[{stop.reason}] {stop.message}"


def _plan(source: Path, destination: Destination, clock: Clock) -> FileRun:
    return run_file(source, destination=destination, dry_run=True, sink=clock.check,
                    keep_events=_keep)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish(new: Path, like: os.stat_result) -> None:
    """Give ``new`` the owner, group, mode and times of ``like``, and put it on disk."""
    os.chown(new, like.st_uid, like.st_gid)
    os.chmod(new, stat.S_IMODE(like.st_mode))
    os.utime(new, ns=(like.st_atime_ns, like.st_mtime_ns))
    fd = os.open(new, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_space(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _rewrite(image: Path, source: Path, destination: Destination, clock: Clock) -> tuple[str, ...]:
    """Rewrite ``source`` (``image`` or its kept original) into ``image``; the original
    is kept. `_Refused` leaves everything as it was."""
    like = _regular(source)
    if like is None:
        raise _Refused(f"{source.name} is not a regular file")
    if _free_space(image.parent) < like.st_size + SPACE_MARGIN:
        raise _Refused(f"not enough free space in {image.parent} for a rewrite of "
                       f"{like.st_size} bytes")
    new = image.with_name(image.name + NEW_SUFFIX)
    run = rewrite_file(source, new, None, destination=destination, check=clock.check)
    if not run.complete:
        raise _Refused(refusal(run))
    try:
        _finish(new, like)
        original = original_of(image)
        if source == image:
            if original.exists() or original.is_symlink():
                original.unlink()  # from an earlier round, no longer this image's
            os.link(image, original)
        os.replace(new, image)
    finally:
        new.unlink(missing_ok=True)
    _fsync_dir(image.parent)
    return planned_changes(run)


def rewrite_image(image: Path, destination: Destination, clock: Clock) -> ImageResult:
    """Make ``image`` fit ``destination`` (see the module's docstring)."""
    if _regular(image) is None:
        return ImageResult(image, Outcome.SKIPPED, "not a regular file")
    original = original_of(image)
    try:
        _check_image(image)
        run = _plan(image, destination, clock)
        if run.complete and not planned_changes(run):
            return ImageResult(image, Outcome.UNCHANGED)
        source, why = image, refusal(run) if not run.complete else ""
        if is_rewrite_of(image, original):
            source = original
            run = _plan(original, destination, clock)
            if run.complete and not planned_changes(run):
                os.replace(original, image)
                _fsync_dir(image.parent)
                return ImageResult(image, Outcome.ORIGINAL_BACK,
                                   f"{original.name} fits as it is")
            why = refusal(run) if not run.complete else ""
        if why:
            return ImageResult(image, Outcome.REFUSED, why)
        changes = _rewrite(image, source, destination, clock)
    except OutOfTime:
        return ImageResult(image, Outcome.SKIPPED, "the time limit passed")
    except _Refused as e:
        return ImageResult(image, Outcome.REFUSED, e.detail)
    except MigproxyError as e:
        return ImageResult(image, Outcome.REFUSED, e.user_message())
    except OSError as e:
        return ImageResult(image, Outcome.REFUSED, f"{e.filename or image}: {e.strerror or e}")
    kept = f"original kept as {original.name}"
    return ImageResult(image, Outcome.REWRITTEN,
                       kept if source == image else f"again from {original.name}", changes)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (`SavesLocked` if another run has it)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SavesLocked(f"{directory}: another migproxy saves run holds it") from None
            raise
        yield
    finally:
        os.close(fd)


def remove_partial(directory: Path) -> list[Path]:
    """Remove what an interrupted run left: ``NAME.save.migproxy-new`` and the temporary
    files of its rewrite (``.NAME.save.migproxy-new.*``)."""
    gone = []
    for p in directory.iterdir():
        stem, mark, rest = p.name.partition(IMAGE_SUFFIX + NEW_SUFFIX)
        ours = (not p.name.startswith(".") and rest == "") or \
            (p.name.startswith(".") and rest.startswith("."))
        if mark and stem.lstrip(".") and ours and _regular(p) is not None:
            p.unlink()
            gone.append(p)
    return gone


def rewrite_saves(directory: Path, destination: Destination, *,
                  time_limit: float | None = None,
                  report: Callable[[ImageResult], object] = lambda r: None,
                  ) -> list[ImageResult]:
    """Rewrite every managed-save image in ``directory`` for ``destination``; ``report``
    is called with each result as it comes."""
    clock = Clock(time_limit)
    results: list[ImageResult] = []
    with locked(directory):
        remove_partial(directory)
        for i, image in enumerate(image_paths(directory)):
            if i >= MAX_IMAGES:
                r = ImageResult(image, Outcome.SKIPPED, f"over {MAX_IMAGES} images in one run")
            elif clock.passed:
                r = ImageResult(image, Outcome.SKIPPED, "the time limit passed")
            else:
                r = rewrite_image(image, destination, clock)
            results.append(r)
            report(r)
    return results


@dataclass(frozen=True)
class CleanResult:
    original: Path
    removed: bool
    detail: str


def clean_saves(directory: Path) -> list[CleanResult]:
    """Remove the kept originals whose managed-save image is gone."""
    results = []
    with locked(directory):
        remove_partial(directory)
        for original in sorted(directory.glob("*" + IMAGE_SUFFIX + ORIGINAL_SUFFIX)):
            image = original.with_name(original.name[:-len(ORIGINAL_SUFFIX)])
            if image.exists() or image.is_symlink():
                results.append(CleanResult(original, False,
                                           f"kept: {image.name} is not restored yet"))
                continue
            original.unlink()
            results.append(CleanResult(original, True,
                                       f"removed: {image.name} is gone (restored or removed)"))
        _fsync_dir(directory)
    return results
