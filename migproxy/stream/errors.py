"""Errors raised by the stream engine, its section rewriters and the offline tools."""

from __future__ import annotations

from migproxy.stream.reasons import Reason


class MigproxyError(Exception):
    """Base class of every error migproxy reports to a user."""


class FormatError(MigproxyError):
    """The bytes do not follow the migration stream grammar.

    ``offset`` is the absolute stream offset of the first byte that does not fit,
    ``expected`` says what the grammar wanted there.
    """

    def __init__(self, offset: int, expected: str, found: str | None = None) -> None:
        self.offset = offset
        self.expected = expected
        self.found = found
        text = f"at offset {offset} (0x{offset:x}): expected {expected}"
        if found is not None:
            text += f", found {found}"
        super().__init__(text)


class TruncatedError(FormatError):
    """The stream ended in the middle of an item."""


class Unsupported(MigproxyError):
    """The stream is well formed as far as read but uses something migproxy cannot rewrite.

    ``reason`` says what (it is the metrics label); the message explains it to a person.
    """

    def __init__(self, reason: Reason, message: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        where = f" at offset {offset} (0x{offset:x})" if offset is not None else ""
        super().__init__(f"{message}{where}")


class SectionRefused(MigproxyError):
    """A section rewriter will not rewrite the device state it was handed.

    Raised by a rewriter's ``decode`` (the section is not in a layout it understands) or
    ``plan`` (a rule refuses); the engine then stops rewriting with ``reason``.
    """

    reason: Reason = Reason.FORMAT_ERROR
    context: str = ""  # put before the message in the engine's event

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(message)
