"""One exception tree for all of flowpath.

Every error carries the context a user needs to act on it (which port, which
flow, which field, which position in which text) as keyword attributes, and
renders them into one line.  Lower-layer errors (OSError, pyroute2's
NetlinkError) are mapped once, where the I/O happens, with ``raise ... from``.

    FlowpathError
     +-- ParseError            malformed text: flow line, rule, config
     +-- ValidationError       well-formed but invalid: mask/key, ranges
     +-- DatapathError         a datapath refused or failed an operation
     |    +-- FlowExists       put of a ufid or overlapping megaflow that is there
     |    +-- FlowNotFound     get/modify/delete of an unknown ufid
     |    +-- FlowLimit        the datapath is full
     |    +-- PortError        a port is unknown, vanished, or refused I/O
     +-- OffloadError          tc / devlink said no (carries the extack text)
     +-- DeviceError           a netdev or devlink device is missing or wrong
"""

from __future__ import annotations

from typing import Any


class FlowpathError(Exception):
    """Base of every error flowpath raises on purpose.

    ``message`` says what went wrong; ``context`` says where (port, ufid,
    field, position, device, operation...).  ``str()`` gives one line.
    """

    def __init__(self, message: str, **context: Any) -> None:
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if not self.context:
            return self.message
        where = ", ".join(f"{k}={v}" for k, v in self.context.items())
        return f"{self.message} ({where})"


class ParseError(FlowpathError):
    """Malformed text.  ``text`` and ``pos`` locate the problem."""

    def __init__(
        self, message: str, *, text: str | None = None, pos: int | None = None,
        expected: str | None = None, **context: Any,
    ) -> None:
        self.text = text
        self.pos = pos
        self.expected = expected
        super().__init__(message, pos=pos, expected=expected, **context)

    def at(self, where: str, *, drop: str = "") -> ParseError:
        """This error with ``where`` ("rule 3", "FILE:LINE") in front of its
        message, a leading ``drop`` (a parser's own "rule: ") taken off it, and
        everything else kept: text, position, expected and the structured
        context.  Raise it ``from None``: it says all the original said."""
        context = {k: v for k, v in self.context.items() if k not in ("pos", "expected")}
        return ParseError(f"{where}: {self.message.removeprefix(drop)}", text=self.text,
                          pos=self.pos, expected=self.expected, **context)

    def __str__(self) -> str:
        base = super().__str__()
        if self.text is None or self.pos is None:
            return base
        snippet = self.text[max(0, self.pos - 20): self.pos + 20]
        return f"{base}: near {snippet!r}"


class ValidationError(FlowpathError):
    """Well-formed input that breaks a rule of the model."""


class DatapathError(FlowpathError):
    """A datapath operation failed."""


class FlowExists(DatapathError):
    """The flow (same ufid or an overlapping megaflow) is already installed."""


class FlowNotFound(DatapathError):
    """No flow with that ufid."""


class FlowLimit(DatapathError):
    """The datapath refuses new flows above its limit."""


class PortError(DatapathError):
    """A port is unknown, has vanished, or refused I/O."""


class OffloadError(FlowpathError):
    """The kernel refused a tc / devlink operation; ``extack`` keeps its text."""

    def __init__(self, message: str, *, extack: str | None = None, errno: int | None = None,
                 **context: Any) -> None:
        self.extack = extack
        self.errno = errno
        super().__init__(message, extack=extack, errno=errno, **context)


class OffloadUnsure(OffloadError):
    """A socket error cut a tc batch after this operation's request was
    sent: the kernel may or may not have applied it (read it back)."""


class DeviceError(FlowpathError):
    """A netdev or devlink device is missing, vanished, or not in the right mode."""
