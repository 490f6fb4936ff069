"""Why the engine stopped rewriting a main channel.

A reason is a stable, low-cardinality token (a :class:`StopReason`): it is the ``reason``
label of the ``migproxy_passthrough_total`` and ``migproxy_aborts_total`` metrics (every
label is created at start), the ``reason`` of the ``passthrough`` / ``abort`` log lines and
of the :class:`~migproxy.stream.events.PassthroughEntered` and
:class:`~migproxy.stream.events.Aborted` events. The core's own reasons are :class:`Reason`;
a section rewriter (a plug-in) declares its own in a :class:`StopReason` subclass and lists
them in its ``reasons`` (the ARM plug-in: :class:`migproxy.arm.reasons.ArmReason`), so the
core names no architecture. The reason table of docs/design.md ("Stop reasons") lists every
member with the same words.
"""

from __future__ import annotations

import enum


class StopReason(enum.StrEnum):
    """The base of every reason: the core's (:class:`Reason`) and each plug-in's."""

    @property
    def source_ended(self) -> bool:
        """The source closed the channel before the stream was complete."""
        return False


class Reason(StopReason):
    """The stream is not (or no longer) rewritten, and why (the core's reasons)."""

    # -- the grammar ------------------------------------------------------------------
    FORMAT_ERROR = "format_error"  # the bytes do not follow the migration stream grammar
    TRUNCATED = "truncated"  # the source closed in the middle of the streamed part
    # -- well formed, but not supported -----------------------------------------------
    UNKNOWN_CONFIGURATION = "unknown_configuration"  # a configuration subsection not known
    MAPPED_RAM = "mapped_ram"  # the mapped-ram capability (file migration)
    NO_PAGE_SIZE = "no_page_size"  # no target-page-bits and no legacy_page_bits set
    FULL_SECTION_EARLY = "full_section_early"  # device state before the iterable phase ended
    ITERABLE_SECTION = "iterable_section"  # an iterable section other than "ram"
    LIMIT_EXCEEDED = "limit_exceeded"  # more RAM blocks or sections than migproxy keeps
    RAM_VERSION = "ram_version"  # a ram section version or instance other than 4 / 0
    UNKNOWN_COMMAND = "unknown_command"  # a MIG_CMD number not known
    POSTCOPY_PACKAGED = "postcopy_packaged"  # postcopy: the PACKAGED device state cannot
    # be framed (no section layouts configured, or the package is not as QEMU writes it)
    POSTCOPY_LAYOUT = "postcopy_layout"  # postcopy: a section before the last cpu section
    # of the package has no layout migproxy knows exactly, or does not end where it says
    POSTCOPY_PAGE_SIZES = "postcopy_page_sizes"  # postcopy with huge-page RAM blocks
    COLO = "colo"  # COLO streams
    NO_FOOTER = "no_footer"  # sections without footers (machine types before 2.3)
    RAM_HOOK = "ram_hook"  # RAM hook records (RDMA)
    # -- the non-iterable device state ------------------------------------------------
    NO_DESCRIPTION = "no_description"  # the source closed before a description framed it
    HOLD_CAP_EXCEEDED = "hold_cap_exceeded"  # the device state outgrew hold_cap
    HOLD_BUDGET_EXHAUSTED = "hold_budget_exhausted"  # other migrations hold the whole budget
    DEVICE_STATE_NOT_FRAMED = "tail_not_framed"  # the description does not frame the bytes
    DESCRIPTION_NOT_RECOGNISED = "description_not_recognised"  # return path: the last
    # description frames the bytes but is not taken for QEMU's (a rewriter does not know a
    # section's layout, or it is not as QEMU writes it) and nothing followed it
    DATA_AFTER_END = "data_after_end"  # bytes after the VM description
    # -- migproxy itself --------------------------------------------------------------
    INTERNAL_ERROR = "internal_error"  # a bug: the engine raised; it stops, it never crashes

    @property
    def source_ended(self) -> bool:
        """The source closed the channel before the stream was complete: a migration that
        was cancelled or failed at the source, not a stream migproxy misread."""
        return self in _SOURCE_ENDED


def stop_reasons(*plug_ins: object) -> tuple[StopReason, ...]:
    """The core's reasons, then those the plug-ins declare (their ``reasons``), once each."""
    out: dict[StopReason, None] = dict.fromkeys(Reason)
    for p in plug_ins:
        out.update(dict.fromkeys(getattr(p, "reasons", ())))
    return tuple(out)


_SOURCE_ENDED = frozenset({Reason.TRUNCATED, Reason.NO_DESCRIPTION})
