"""The end of the held device state: when a VM description at the end of what is held is
taken for the stream's own.

Without the return path the source closes right after the description, so the end is
framed at the source's EOF (:attr:`EndDetection.end_at_source_eof`). With it, the source
waits for the destination: a description that frames what is held (each candidate
position from :meth:`~migproxy.stream.devstate.HeldDeviceState.candidates`) must also be
QEMU's serialisation for this stream and name only layouts the rewriters know field for
field; it is then pending (:attr:`EndDetection.end_pending`) until the driver's quiet
window passes (:meth:`EndDetection.conclude`). A description that does not frame what is
held is remembered (``unframed``) and becomes the verdict when nothing follows it.
"""

from __future__ import annotations

from migproxy.stream import vmdesc
from migproxy.stream.enginestate import FeedResult, Mode
from migproxy.stream.policy import MAX_DESCRIPTION_CONTAINERS
from migproxy.stream.reasons import Reason
from migproxy.stream.vmdesc import DescriptionMismatch, DeviceStateLayout, unlike_qemus
from migproxy.stream.writer import DeviceStateWriter, PreparedRelease


class EndDetection(DeviceStateWriter):
    """Finds and confirms the end of the held device state (a part of
    :class:`~migproxy.stream.engine.StreamEngine`)."""

    @property
    def end_unconfirmed(self) -> bool:
        """A description at the end of what is held parsed but does not frame it, and no
        byte has come since: the driver should call :meth:`conclude` if none comes within
        a short delay (the source, waiting on the return path, will send nothing more)."""
        return self.mode == Mode.HOLDING and self.unframed is not None

    @property
    def end_pending(self) -> bool:
        """With the return path: a description at the end of what is held frames it and
        passed every check, and no byte has come since. The driver calls :meth:`conclude`
        when none comes within a short quiet window (the source, waiting on the return
        path, sends nothing after the real description; a planted one is followed by the
        rest of the device state in the same burst)."""
        return self.mode == Mode.HOLDING and self.pending is not None

    def conclude(self) -> FeedResult:
        """No byte came within the driver's window after the end of what is held: release
        a pending end (:attr:`end_pending`), or take an unframed one as the verdict
        (:attr:`end_unconfirmed`: passthrough of everything held, or abort). Nothing to do
        otherwise."""
        res = FeedResult()
        try:
            if self.end_pending:
                self._confirm(res)
            elif self.end_unconfirmed:
                self._unframed_verdict(res)
        except Exception as e:  # a bug must stop rewriting, never crash the caller
            self._internal_error(res, e, memoryview(b""), self.received)
        return res

    def _confirm(self, res: FeedResult) -> None:
        layout = self.pending
        assert layout is not None
        self.pending = None
        prep = self._take_prepared()
        if prep is not None and prep.layout is layout:
            self._emit(res, prep)
        else:
            self._release(res, layout)

    def _take_prepared(self) -> PreparedRelease | None:
        """The release computed ahead, if nothing was held since (forgotten either way)."""
        prep = self.prepared
        self.prepared = None
        held = self._held
        if prep is None or held is None or len(held.buf) != prep.length:
            return None
        return prep

    def _unframed_verdict(self, res: FeedResult) -> None:
        assert self.unframed is not None
        reason, message, offset = self.unframed
        self._not_understood(res, reason, message, offset,
                             memoryview(b""), self.received)

    @property
    def end_at_source_eof(self) -> bool:
        """Without the return path the source closes the connection right after the VM
        description, so the end of the device state is a fact of the transport: it is
        framed at the source's EOF, and guest bytes that imitate a description (they can
        only be in the device state, before the real one) can never be taken for the end.
        With the return path the source waits for the destination instead, and the end is
        recognised by content (:meth:`_try_end`)."""
        return "OPEN_RETURN_PATH" not in self.framer.commands_seen

    def _try_end(self, res: FeedResult) -> None:
        """Release the device state if a description at the end of what is held frames it."""
        held = self._held
        assert held is not None
        for p in held.candidates():
            raw = memoryview(held.buf)[p + 6 :]
            if len(raw) > self.config.max_description:
                self._oversized = len(raw)  # not parsed: said at the end if nothing frames
                continue
            if held.buf.count(b"{", p + 6) + held.buf.count(b"[", p + 6) > \
                    MAX_DESCRIPTION_CONTAINERS:
                self._oversized = len(raw)
                continue
            desc = vmdesc.parse_description(raw)
            if desc is None:
                continue  # not a description: keep waiting
            try:
                layout = vmdesc.frame_device_state(held.buf, p, desc)
            except DescriptionMismatch as e:
                self.unframed = (Reason.DEVICE_STATE_NOT_FRAMED,
                                 f"the VM description does not frame the device state: {e}",
                                 held.start_offset + e.rel_offset)
                if self.end_at_source_eof:
                    self._unframed_verdict(res)  # the end is known: this is the verdict
                    return
                # With the return path the end is only a hypothesis: a description a guest
                # planted, followed by the rest of the real device state, looks like this
                # until the next byte. Not a verdict: wait (conclude() decides if nothing
                # more arrives).
                continue
            if not self.end_at_source_eof:
                why = self._unlike_the_end(raw, desc, layout)
                if why is not None:
                    self.unframed = (Reason.DESCRIPTION_NOT_RECOGNISED,
                                     f"the VM description at the end is not taken for the "
                                     f"stream's own: {why}", held.start_offset + p)
                    continue
                self.pending = layout  # confirmed by the quiet window (or the source's EOF)
                self.prepared = self._prepare(layout)
                return
            self._release(res, layout)
            return

    def _unlike_the_end(self, raw: memoryview, desc: dict[str, object],
                        layout: DeviceStateLayout) -> str | None:
        """Why a framing description, with the return path, is not taken for the end:
        not QEMU's serialisation or not this stream's (:func:`unlike_qemus`), or a section
        a rewriter claims is not in a layout it knows field for field."""
        why = unlike_qemus(raw, desc, self._facts())
        if why is not None:
            return why
        devices = layout.description["devices"]
        for item, rw in self._claimed(layout):
            why = rw.recognises(item, devices[item.device_index])
            if why is not None:
                return f"section {item.idstr!r} instance {item.instance_id}: {why}"
        return None
