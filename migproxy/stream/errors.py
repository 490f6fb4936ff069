"""Errors raised by the stream engine and the offline tools."""

from __future__ import annotations


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

    ``reason`` is a short, stable, low-cardinality token (used as a metrics label);
    the message explains it to a person.
    """

    def __init__(self, reason: str, message: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        where = f" at offset {offset} (0x{offset:x})" if offset is not None else ""
        super().__init__(f"{message}{where}")


class ProfileError(MigproxyError):
    """A register profile is invalid."""


class RewriteRefused(MigproxyError):
    """A profile rule's condition does not hold, so the cpu section must not be rewritten."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
