"""The one error hierarchy of migproxy, with the command line's exit status on each class.

Every error migproxy reports to a user is a :class:`MigproxyError`. Its ``exit_code`` is
the status the command line exits with (:func:`migproxy.cli.main` prints ``prefix`` and
the message, and returns it):

- :data:`EXIT_STREAM` (1): a stream could not be framed or rewritten (the message says
  where and why); the default;
- :data:`EXIT_USAGE` (2, :class:`UsageError`): what the operator gave cannot be used: a
  command line, a configuration, a profile, a credentials directory, a missing program.

Errors that only travel inside the engine (:class:`~migproxy.stream.vmdesc.DescriptionMismatch`,
the hold caps of :mod:`migproxy.stream.devstate`) are :class:`MigproxyError` too; the engine
turns them into a stop with a reason before they could reach a user.
"""

from __future__ import annotations

from typing import ClassVar

from migproxy.stream.reasons import Reason, StopReason

EXIT_OK = 0
EXIT_STREAM = 1
EXIT_USAGE = 2


class MigproxyError(Exception):
    """Base class of every error migproxy reports to a user."""

    exit_code: ClassVar[int] = EXIT_STREAM
    prefix: ClassVar[str] = ""  # put before the message on the command line

    def user_message(self) -> str:
        """The message as the command line prints it."""
        return f"{self.prefix}{self}"


class UsageError(MigproxyError):
    """What the operator gave cannot be used (exit status 2)."""

    exit_code = EXIT_USAGE


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

    def __init__(self, reason: StopReason, message: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        where = f" at offset {offset} (0x{offset:x})" if offset is not None else ""
        super().__init__(f"{message}{where}")


class SectionRefused(MigproxyError):
    """A section rewriter will not rewrite the device state it was handed.

    Raised by a rewriter's ``decode`` (the section is not in a layout it understands) or
    ``plan`` (a rule refuses); the engine then stops rewriting with ``reason``.
    """

    reason: StopReason = Reason.FORMAT_ERROR
    context: str = ""  # put before the message in the engine's event

    def __init__(self, message: str, *, reason: StopReason | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(message)
